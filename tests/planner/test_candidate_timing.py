"""Candidates confirmed side by side (`plan._interleaved`) are timed with one loaded at
a time: an onnxruntime session whose pool threads spin after each run (the deployment
setting, which the artifact keeps) slows another session's runs when the two are run
in turn, so two identical candidates did not time alike."""

from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from edgec.planner import plan
from edgec.planner.evaluate import Attempt
from edgec.planner.search import Configuration, Evaluation
from edgec.testing.models import conv_stack


class _CountingBackend:
    """Loads runners that count how many of them are alive at once."""

    def __init__(self):
        self.live = 0
        self.most_live = 0
        self.runs: dict[str, int] = {}
        backend = self

        class Runner:
            input_names = ["x"]
            output_names = ["y"]

            def __init__(self, folder):
                self.folder = folder
                backend.live += 1
                backend.most_live = max(backend.most_live, backend.live)

            def run(self, feed):
                backend.runs[self.folder] = backend.runs.get(self.folder, 0) + 1
                return {"y": feed["x"]}

            def __del__(self):
                backend.live -= 1

        self.runner = Runner

    def load(self, folder, details):
        return self.runner(folder)


def _attempt(folder: str, details=None) -> Attempt:
    config = Configuration(f"{folder} on ort", "fp32", "", "", "ort")
    return Attempt(Evaluation(config), folder, result=SimpleNamespace(details=details or {}))


def test_side_by_side_timing_loads_one_candidate_at_a_time(monkeypatch):
    backend = _CountingBackend()
    monkeypatch.setattr(plan, "get_backend", lambda name: backend)
    ctx = SimpleNamespace(bench_inputs={"x": np.zeros((1, 4), np.float32)})
    a_ms, b_ms = plan._interleaved(ctx, _attempt("a"), _attempt("b"))
    assert a_ms > 0 and b_ms > 0
    assert backend.most_live == 1 and backend.live == 0
    # A model this fast gets blocks of runs long enough to time, up to the cap.
    assert set(backend.runs) == {"a", "b"}
    for runs in backend.runs.values():
        assert plan.CONFIRM_ROUNDS * (plan.CONFIRM_WARMUP + plan.CONFIRM_RUNS) < runs \
            <= plan.CONFIRM_ROUNDS * (plan.CONFIRM_WARMUP + plan.CONFIRM_MAX_RUNS)


@pytest.mark.slow
def test_two_identical_onnxruntime_candidates_time_alike_and_as_alone(tmp_path):
    """The same artifact given as both candidates, with the ort backend's deployment
    settings (2 threads, spinning on), times alike side by side, and as it times alone
    (`measure`, how each candidate was measured first). Both sessions alive and run in
    turn, the former way, timed each about 2x its time alone on 2 cores. Slow-marked:
    a timing bound wants a quiet machine; benchmarks/candidate_timing.py prints both ways."""
    from edgec.backends import get_backend
    from edgec.backends.base import BuildOptions

    onnx.save(conv_stack(), tmp_path / "model.onnx")
    options = BuildOptions(cache_dir=str(tmp_path), threads=2)
    details = {"model": "model.onnx", "settings": get_backend("ort").settings(options)}
    attempt = _attempt(str(tmp_path), details)
    ctx = SimpleNamespace(bench_inputs={
        "x": np.random.default_rng(1).standard_normal((1, 32, 56, 56)).astype(np.float32)})
    pairs, vs_alone = [], []
    for _ in range(3):
        alone = get_backend("ort").measure(str(tmp_path), details, ctx.bench_inputs,
                                           options).percentile(50) * 1e3
        a_ms, b_ms = plan._interleaved(ctx, attempt, attempt)
        pairs.append(b_ms / a_ms)
        vs_alone.append(max(a_ms, b_ms) / alone)
    assert 0.75 < sorted(pairs)[1] < 1.33, pairs
    assert sorted(vs_alone)[1] < 1.4, vs_alone


def test_a_fast_candidate_is_timed_over_enough_runs():
    """A 20 µs model: 50 runs are 1 ms of samples; it is timed until 0.1 s (at most 1000
    runs). A slow one keeps the 50 runs."""
    import time

    from edgec.backends.base import time_calls

    assert len(time_calls(lambda: None)) == 1000
    fast = time_calls(lambda: time.sleep(0.0005))
    assert 50 < len(fast) < 1000 and sum(fast) >= 0.1
    assert len(time_calls(lambda: time.sleep(0.003))) == 50
