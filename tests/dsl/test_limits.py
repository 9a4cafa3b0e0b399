"""Big or hostile inputs end quickly: a 1 MB spec parses or fails in under a second."""

from __future__ import annotations

import time

import pytest

from edgec.dsl import check_text
from edgec.dsl.parser import MAX_STATEMENT_TEXT, _lark

ONE_MB = 1_000_000
STATEMENTS = "budget {\n  latency < 15 ms p50 at batch 1\n  memory < 512 MiB\n}\n"


def timed(text: str):
    _lark()  # the parser is built once per process; that is not what is measured here
    start = time.perf_counter()
    spec, diagnostics = check_text(text, "<big>")
    return time.perf_counter() - start, spec, diagnostics


@pytest.mark.parametrize("kind", ["statements", "comments", "garbage", "open-braces",
                                  "errors-every-line", "one-long-line"])
def test_one_megabyte_ends_within_a_second(kind):
    text = {
        "statements": STATEMENTS * (ONE_MB // len(STATEMENTS)),
        "comments": "# why this board\n" * (ONE_MB // 17) + "target x86-64-v3\n",
        "garbage": ("}{ <= %% \"\\ @ 15 ms ;" * ONE_MB)[:ONE_MB],
        "open-braces": "budget {" + "{" * ONE_MB,
        "errors-every-line": "latency <\n" * (ONE_MB // 10),
        "one-long-line": "target " + "x" * ONE_MB,
    }[kind]
    assert len(text) >= ONE_MB - 100
    elapsed, spec, diagnostics = timed(text)
    assert elapsed < 1.0, f"{kind}: {elapsed:.2f} s"
    if kind == "comments":
        assert spec is not None
    else:
        assert spec is None and diagnostics[0].location.line >= 1


def test_too_many_statements_is_reported_where_the_limit_is_reached():
    elapsed, spec, diagnostics = timed(STATEMENTS * (2 * MAX_STATEMENT_TEXT // len(STATEMENTS)))
    [diagnostic] = diagnostics
    assert diagnostic.code == "spec.too-large"
    assert diagnostic.location.line > 1000
