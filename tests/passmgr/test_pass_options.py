"""Pass options are checked when the pass is constructed: a bad value is a usage error
located at the option in the pipeline text (exit 2), before any pass runs."""

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import pytest

from edgec.diagnostics import UsageError
from edgec.passmgr import OptionError, Pass, PassRegistry, PassResult, default_registry, parse_and_check
from edgec.passmgr.base import literal_values


# (pipeline text, the column the caret points at, a fragment of the message)
BAD_OPTIONS = [
    ("prune-channels{criterion=l3}", 16, "expected one of l1, l2, got 'l3'"),
    ("prune-channels{sparsity=1}", 16, "'sparsity' of pass 'prune-channels': must be in [0, 1)"),
    ("prune-channels{multiple-of=0}", 16, "must be at least 1"),
    ("prune-channels{min-channels=0}", 16, "must be at least 1"),
    ("prune-channels{recalibration-samples=-1}", 16, "must be >= 0"),
    ("prune-unstructured{scope=layer}", 20, "expected one of global, per-layer"),
    ("prune-unstructured{sparsity=-0.1}", 20, "must be in [0, 1)"),
    ("prune-unstructured{ops=Conv,Relu}", 20, "cannot prune Relu"),
    ("quantize-dynamic{format=qop}", 18, "expected one of contrib, standard"),
    ("quantize-dynamic{ops=Conv}", 18, "only MatMul, Gemm, LSTM and Attention, not Conv"),
    ("quantize-weights{bits=3}", 18, "expected one of 8, 4, got '3'"),
    ("quantize-weights{bits=4 block-size=24}", 25, "power of two >= 16, got 24"),
    ("quantize-weights{ops=Erf}", 18, "not Erf"),
    ("quantize-int8{calibration=kl}", 15, "expected one of minmax, percentile, entropy"),
    ("quantize-int8{fallback=all}", 15, "expected one of none, per-layer"),
    ("quantize-int8{ops=Erf}", 15, "no int8 kernel for Erf"),
    ("quantize-int8{percentile=0}", 15, "must be in (0, 100]"),
    ("quantize-int8{samples=0}", 15, "must be at least 1"),
    ("quantize-int8{metric=top-1}", 15, "unknown metric 'top-1'"),
    ("quantize-int8{tolerance=one}", 15, "got 'one'"),
    ("fuse{patterns=conv-relu}", 6, "unknown pattern 'conv-relu'"),
    ("fuse{exclude=attn}", 6, "unknown pattern 'attn'"),
    ("fuse{raise-opset=-1}", 6, "must be >= 0"),
    ("convert-fp16{overflow-margin=2}", 14, "must be in (0, 1]"),
    ("fold-constants{max-size=-1}", 16, "must be >= 0"),
    # Nested in a group and after other passes: still located in the whole text.
    ("cse,fixed-point(dce,prune-channels{criterion=l3})", 36, "got 'l3'"),
]


@pytest.mark.parametrize("text,column,fragment", BAD_OPTIONS, ids=[t for t, _, _ in BAD_OPTIONS])
def test_bad_option_is_located_usage_error(text, column, fragment):
    with pytest.raises(UsageError) as info:
        parse_and_check(text)
    diag = info.value.diagnostics[0]
    assert fragment in diag.message, diag.message
    assert diag.location.column == column, diag.render()
    assert diag.source_line == text
    assert diag.render().splitlines()[-1] == " " * (column + 1) + "^"


def test_every_builtin_pass_constructs_with_its_defaults():
    registry = default_registry()
    builtins = [e for e in registry.entries() if e.source == "built-in"]
    assert len(builtins) >= 15
    for entry in builtins:
        entry.cls()  # the defaults pass the pass's own checks
        hints = typing.get_type_hints(entry.cls)
        for f in dataclasses.fields(entry.cls):
            allowed = literal_values(hints[f.name])
            if allowed is not None:
                assert f.default in allowed, (entry.name, f.name)


def test_direct_construction_is_checked_too():
    from edgec.passes.prune_channels import PruneChannels
    from edgec.passes.quantize_weights import QuantizeWeights

    with pytest.raises(OptionError) as info:
        PruneChannels(criterion="l3")
    assert info.value.option == "criterion"
    with pytest.raises(OptionError, match="block-size"):
        QuantizeWeights(bits=4, block_size=12)
    assert QuantizeWeights(bits=8, block_size=12).bits == 8  # block-size is for 4-bit only


@dataclass(frozen=True)
class Levels(Pass):
    """A pass with Literal options of several types."""

    name: ClassVar[str] = "levels"
    bits: Literal[8, 4] = 8
    mode: Literal["fast", "exact"] | None = None
    depth: int = field(default=1, metadata={"help": "at least 1"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.depth < 1:
            raise OptionError("depth", f"must be at least 1, got {self.depth}")

    def run(self, model, ctx):
        return PassResult(False)


@pytest.fixture
def registry():
    r = PassRegistry()
    r.register(Levels, source="test")
    return r


def test_literal_options_convert_to_their_values(registry):
    (element,) = parse_and_check("levels{bits=4 mode=exact}", registry)
    p = registry.create(element)
    assert p.bits == 4 and isinstance(p.bits, int) and p.mode == "exact"
    (element,) = parse_and_check("levels{mode=none}", registry)
    assert registry.create(element).mode is None


def test_option_error_on_a_default_points_at_the_pass(registry):
    @dataclass(frozen=True)
    class NeedsOption(Pass):
        name: ClassVar[str] = "needs-option"
        size: int = 0

        def __post_init__(self) -> None:
            if self.size == 0:
                raise OptionError("size", "must be given")

        def run(self, model, ctx):
            return PassResult(False)

    registry.register(NeedsOption, source="test")
    with pytest.raises(UsageError) as info:
        parse_and_check("levels,needs-option", registry)
    diag = info.value.diagnostics[0]
    assert diag.location.column == 8 and "pass 'needs-option'" in diag.message
    assert "option 'size': must be given" in diag.message


@pytest.mark.parametrize("text,column,fragment", [
    ("levels{bits=16}", 8, "expected one of 8, 4, got '16'"),
    ("levels{mode=slow}", 8, "expected one of fast, exact, got 'slow'"),
    ("levels{depth=0}", 8, "option 'depth' of pass 'levels': must be at least 1, got 0"),
])
def test_plugin_pass_options(registry, text, column, fragment):
    with pytest.raises(UsageError) as info:
        parse_and_check(text, registry)
    diag = info.value.diagnostics[0]
    assert fragment in diag.message and diag.location.column == column


def test_every_metric_a_spec_accepts_is_a_valid_fallback_metric():
    """The planner writes the spec's metric and tolerance into quantize-int8's options:
    every metric the spec language accepts must construct."""
    from edgec.dsl.semantic import metric_names
    from edgec.passes.quantize_int8 import QuantizeInt8

    for metric in metric_names():
        for tolerance in ("1%", "0.05", "30dB", "30 db"):
            QuantizeInt8(fallback="per-layer", metric=metric, tolerance=tolerance)
    # With options, as the spec resolves them ('metric iou threshold 0.3').
    for metric in ("sequence-agreement blank 2", "iou threshold 0.3", "dice threshold 0.5"):
        QuantizeInt8(fallback="per-layer", metric=metric, tolerance="1%")
    with pytest.raises(OptionError, match="has no option 'blank'"):
        QuantizeInt8(fallback="per-layer", metric="iou blank 2", tolerance="1%")
