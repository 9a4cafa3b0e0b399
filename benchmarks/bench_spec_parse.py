"""How long a spec takes to read once the parser is built (target: under 50 ms).

Run: ``python -m pytest benchmarks/bench_spec_parse.py --benchmark-enable``.
"""

from __future__ import annotations

from pathlib import Path

from edgec.dsl import check_text
from edgec.dsl import semantic
from edgec.dsl.parser import _lark, parse_text

EXAMPLES = Path(__file__).resolve().parents[1] / "spec_examples"
BUDGET_S = 0.050


def _check_uncached(text: str, path: str):
    # Parse results are memoised per process; measure the spec and the target files
    # it names being read from scratch.
    semantic._parse_cached.cache_clear()
    return check_text(text, path)


def _mean_within_budget(benchmark) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable: then it only ran once
        assert stats.stats.mean < BUDGET_S, f"mean {stats.stats.mean * 1e3:.1f} ms"


def test_parse_canonical_example(benchmark):
    text = (EXAMPLES / "jetson.edge").read_text()
    _lark()
    result = benchmark(parse_text, text, "jetson.edge")
    assert result.ok
    _mean_within_budget(benchmark)


def test_check_canonical_example(benchmark):
    """Parse plus resolution: target lookup, units, paths."""
    path = EXAMPLES / "jetson.edge"
    text = path.read_text()
    _lark()
    spec, _ = benchmark(_check_uncached, text, str(path))
    assert spec is not None
    _mean_within_budget(benchmark)


def test_check_example_with_include(benchmark):
    path = EXAMPLES / "include.edge"
    text = path.read_text()
    _lark()
    spec, _ = benchmark(_check_uncached, text, str(path))
    assert spec is not None
    _mean_within_budget(benchmark)
