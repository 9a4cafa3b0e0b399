"""A small declarative rewriter: a rule is a pattern, a check that returns a reason
when the match is not legal, and a rewrite; the driver applies rules to a fixed point."""

from edgec.rewrite.driver import Builder, RewriteDriver, Rule, replaceable_by
from edgec.rewrite.pattern import (Const, Match, Op, Var, attribute, axes_operand, constant_array,
                                  rank_of, scalar_equal, static_shape)

__all__ = ["Builder", "replaceable_by", "Const", "Match", "Op", "RewriteDriver", "Rule", "Var", "attribute", "axes_operand", "constant_array",
           "rank_of", "scalar_equal", "static_shape"]
