"""Campaign (b), the CI sample: mutated ONNX models against `edgec opt` and `edgec
compile` under a 2 GB address-space limit. The full campaign is

    python3 -m edgec.testing.campaigns onnx --count 10000
"""

import pytest

from edgec.testing.campaigns.onnx_models import campaign, make_case, base_models, _op_types, report


def test_mutations_are_deterministic():
    bases, ops = base_models(), _op_types()
    assert make_case(17, 0, bases, ops) == make_case(17, 0, bases, ops)
    assert make_case(17, 0, bases, ops) != make_case(18, 0, bases, ops)


def test_mutated_models_never_crash_opt_or_compile(tmp_path):
    import time

    start = time.monotonic()
    tally = campaign(160, seed=1, jobs=2, memory_gb=2.0, timeout=60, compile_every=4,
                     keep=str(tmp_path / "failing"))
    text = report(tally, time.monotonic() - start)
    assert tally.cases == 160 and tally.runs == 200
    assert not tally.failures, text  # no traceback, no MemoryError, no kill, no hang
