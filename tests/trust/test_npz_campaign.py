"""A deterministic CI sample of campaign (a) (issue 12): mutated npz files against `edgec
run`, `edgec bench` and `edgec compile --data` — no traceback, every refusal one line,
exit 2. The full campaign: ``python3 -m edgec.testing.campaigns npz --count 10000``."""

import pytest

import edgec.data
from edgec.testing.campaigns.npz_files import run_campaign


def _check(summary):
    assert summary["failures"] == 0, summary["failure_examples"]
    assert summary["tracebacks"] == 0
    for target, codes in summary["exit_codes"].items():
        assert set(codes) <= {"0", "2"}, (target, codes)
        assert codes.get("2", 0) > codes.get("0", 0), (target, codes)  # mostly refusals


def test_npz_campaign_sample_run_and_bench():
    _check(run_campaign(300, seed=1, targets=("run", "bench")))


@pytest.mark.skipif(not hasattr(edgec.data, "read_npz"),
                    reason="compile --data reads through np.load until edgec.data has its safe "
                           "reader (issue 12 item 12, data files)")
def test_npz_campaign_sample_compile_data():
    _check(run_campaign(150, seed=2, targets=("compile",)))
