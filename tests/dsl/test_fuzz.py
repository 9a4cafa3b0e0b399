"""Fuzzing the spec front end: random token soups and mutations of valid specs.

Whatever the input, checking it must end (within the deadline) with either a Spec or
error diagnostics that carry a file position -- never an exception. CI runs 2,000
examples; a longer run: ``EDGEC_FUZZ_EXAMPLES=100000 python -m pytest tests/dsl/test_fuzz.py``
(the count is split between the three tests).
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgec.dsl import check_text

EXAMPLES = Path(__file__).resolve().parents[2] / "spec_examples"
TOTAL = int(os.environ.get("EDGEC_FUZZ_EXAMPLES", "2000"))
# Three tests share the total, rounded up so CI runs at least TOTAL examples.
FUZZ = settings(max_examples=max(1, -(-TOTAL // 3)), deadline=1000, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

KEYWORDS = ["include", "target", "budget", "accuracy", "optimize", "latency", "memory",
            "size", "metric", "tolerance", "data", "labels", "precision", "fallback",
            "prune", "tuning", "backend", "pipeline", "seed", "name", "summary", "arch",
            "triple", "cpu", "features", "float-abi", "cores", "clock", "bandwidth",
            "accelerator", "peak", "fast-precisions", "int8-accumulation", "sm-count", "auto", "none",
            "default", "per-layer", "structured", "unstructured", "trials", "up", "to",
            "at", "batch", "p50", "p90", "cuda"]
WORDS = ["host", "jetson-orin-nano", "raspberry-pi-4", "x86_64", "aarch64", "armv7",
         "fp32", "fp16", "int8", "top1-agreement", "sqnr", "accuracy", "tvm", "ort",
         "sm_87", "hard", "latncy", "jetson", "msec", "bogus"]
UNITS = ["ns", "us", "ms", "s", "min", "B", "KiB", "MiB", "GiB", "KB", "MB", "GB", "%",
         "dB", "GB/s", "GFLOPS", "TOPS", "GHz", "mib", "parsec"]
PUNCTUATION = ["{", "}", "<", "<=", ",", ";", "\n", "\n\n", " ", "#", "=", ":", '"', "\\",
               "\t", "\r\n", "(", ")", "@", "\x00", "é", "\ufeff"]
NUMBERS = st.one_of(st.integers(0, 10 ** 6).map(str),
                    st.floats(0, 1e6, allow_nan=False).map(repr),
                    st.sampled_from(["1e999", "0", ".5", "1.", "9" * 400, "1e-400"]))
STRINGS = st.one_of(st.sampled_from(['"data/digits.npz"', '"cse,dce"', '"cse,,dce"',
                                     '"team-base.edge"', '"x.edge"', '"+neon"', '""',
                                     '"fuse{patterns=conv-bn}"', '"fixed-point(cse"']),
                    st.text(max_size=12).map(lambda s: '"' + s.replace('"', "") + '"'))
TOKEN = st.one_of(st.sampled_from(KEYWORDS), st.sampled_from(WORDS), st.sampled_from(UNITS),
                  st.sampled_from(PUNCTUATION), NUMBERS, STRINGS)

VALID = [p.read_text() for p in sorted(EXAMPLES.glob("*.edge"))]
# Files resolve includes and data paths from the examples' directory.
SPEC_PATH = str(EXAMPLES / "fuzzed.edge")


def assert_checked_cleanly(text: str) -> None:
    spec, diagnostics = check_text(text, SPEC_PATH)
    errors = [d for d in diagnostics if d.is_error]
    if spec is None:
        assert errors, "no Spec and no error"
    else:
        assert not errors
    for diagnostic in errors:
        location = diagnostic.location
        assert location is not None and location.path, diagnostic
        assert location.line is not None and location.line >= 1, diagnostic
        assert location.column is not None and location.column >= 1, diagnostic
        diagnostic.render()
        diagnostic.to_json()


@FUZZ
@given(st.lists(TOKEN, max_size=60).map(" ".join))
def test_token_soup(text):
    assert_checked_cleanly(text)


@FUZZ
@given(st.lists(TOKEN, max_size=60).map("".join))
def test_token_soup_without_spaces(text):
    assert_checked_cleanly(text)


@st.composite
def mutated_spec(draw):
    text = draw(st.sampled_from(VALID))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "insert", "replace", "duplicate-line",
                                     "drop-line", "swap-lines"]))
        at = draw(st.integers(0, len(text)))
        if kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)):]
        elif kind == "insert":
            text = text[:at] + draw(TOKEN) + text[at:]
        elif kind == "replace":
            text = text[:at] + draw(st.characters()) + text[at + 1:]
        else:
            lines = text.split("\n")
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            if kind == "duplicate-line":
                lines.insert(j, lines[i])
            elif kind == "drop-line":
                del lines[i]
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    return text


@FUZZ
@given(mutated_spec())
def test_mutated_valid_spec(text):
    assert_checked_cleanly(text)
