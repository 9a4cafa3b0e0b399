"""Close candidates are not decided by one noisy measurement: rivals whose first latency
is within the margin of the winner's are timed again side by side in alternating rounds
(`plan._interleaved`, one loaded at a time) and the fastest median wins
(`plan._choose_not_slower_than_fp32`); the manifest, measurements.json and the report
say so.

The unit tests time fake runners on a fake clock: each run advances it by the
candidate's true latency, so the figures are exact and the tests deterministic."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import edgec
from edgec.backends.base import LatencyStats
from edgec.planner import plan, search
from edgec.planner.evaluate import Attempt
from edgec.planner.search import (Configuration, Evaluation, choose, close_contenders,
                                  reject_slower_than_fp32)

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "spec_examples" / "digits.onnx"
DATA = REPO / "spec_examples" / "data" / "digits.npz"


class _FakeClock:
    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class _FakeBackend:
    """Runners whose run takes the folder's true latency on the fake clock; counts the
    runners alive at once and the runs of each."""

    def __init__(self, clock: _FakeClock, true_ms: dict[str, float]):
        self.clock, self.true_ms = clock, true_ms
        self.live = self.most_live = 0
        self.runs: dict[str, int] = {}
        backend = self

        class Runner:
            input_names = ["x"]

            def __init__(self, folder):
                self.folder = folder
                backend.live += 1
                backend.most_live = max(backend.most_live, backend.live)

            def run(self, feed):
                backend.runs[self.folder] = backend.runs.get(self.folder, 0) + 1
                backend.clock.now += backend.true_ms[self.folder] / 1e3
                return {}

            def __del__(self):
                backend.live -= 1

        self.runner = Runner

    def load(self, folder, details):
        return self.runner(folder)


def _attempt(label: str, precision: str, first_ms: float, spread: float = 0.05) -> Attempt:
    """A built candidate that holds its budgets, first measured at ``first_ms``."""
    config = Configuration(label, precision, label, "", "ort")
    ev = Evaluation(config, latency_s=first_ms / 1e3, latency_where="host", accuracy_held=True,
                    budgets=[{"name": "accuracy", "status": "held", "detail": ""}])
    stats = LatencyStats(p50=first_ms / 1e3, p90=first_ms * (1 + spread) / 1e3,
                         mean=first_ms / 1e3, samples=50, where="host")
    return Attempt(ev, label, result=SimpleNamespace(details={}), latency=stats)


def _ctx(search_mode: str = "fastest"):
    return SimpleNamespace(spec=SimpleNamespace(optimize=SimpleNamespace(search=search_mode)),
                           bench_inputs={"x": np.zeros((1, 4), np.float32)},
                           build_options=SimpleNamespace(progress=lambda *a: None))


@pytest.fixture
def fake(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(plan, "time", clock)

    def install(true_ms):
        backend = _FakeBackend(clock, true_ms)
        monkeypatch.setattr(plan, "get_backend", lambda name: backend)
        return backend
    return install, clock


def _choose(tried, search_mode="fastest"):
    return plan._choose_not_slower_than_fp32(_ctx(search_mode), tried,
                                             [t.evaluation for t in tried])


def test_the_runoff_picks_the_truly_fastest_when_first_measurements_are_misordered(fake):
    """The crnn case: fp32 1.00, int8 Conv/MatMul/Gemm 0.69, + dynamic LSTM 0.63, all ops
    + dynamic LSTM 0.55 (medians side by side) - but measured once each on a loaded
    machine, + dynamic LSTM looked fastest, and all ops within noise of it."""
    install, _ = fake
    backend = install({"fp32": 10.0, "compute": 6.9, "lstm": 6.3, "all": 5.5})
    tried = [_attempt("fp32", "fp32", 10.0), _attempt("compute", "int8", 7.0),
             _attempt("lstm", "int8", 5.6), _attempt("all", "int8", 5.9)]
    # Without the run-off the first measurements decide, wrongly.
    evaluations = [t.evaluation for t in tried]
    reject_slower_than_fp32(evaluations)
    assert choose(evaluations, "fastest")[0].config.label == "lstm"
    for t in tried:
        t.evaluation.budgets = [b for b in t.evaluation.budgets
                                if b["name"] != "not-slower-than-fp32"]

    winner, best, runoff = _choose(tried)
    assert winner is best and winner.config.label == "all"
    # 7.0 ms is 25 % behind 5.6: not a contender; fp32 is timed with them as the
    # reference for not-slower-than-fp32.
    assert runoff.between == ["lstm", "all"] and runoff.chosen == "all"
    assert runoff.medians_ms == pytest.approx({"lstm": 6.3, "all": 5.5})
    assert runoff.first_ms == pytest.approx({"lstm": 5.6, "all": 5.9})
    assert runoff.fp32_reference == "fp32" and runoff.fp32_ms == pytest.approx(10.0)
    assert runoff.margin == search.RUNOFF_MARGIN
    assert plan.CONFIRM_MIN_ROUNDS <= runoff.rounds <= plan.CONFIRM_ROUNDS
    assert set(backend.runs) == {"fp32", "lstm", "all"}
    assert backend.most_live == 1 and backend.live == 0  # one session alive at a time
    verdict = next(b for b in winner.budgets if b["name"] == "not-slower-than-fp32")
    assert verdict["status"] == "held" and "interleaved: 5.5 ms against 10 ms" in verdict["detail"]


def test_a_contender_slower_than_fp32_side_by_side_misses_and_the_next_wins(fake):
    install, _ = fake
    install({"fp32": 10.0, "a": 10.5, "b": 9.0})
    tried = [_attempt("fp32", "fp32", 12.0), _attempt("a", "int8", 8.0),
             _attempt("b", "int8", 8.5)]
    winner, _, runoff = _choose(tried)
    assert winner.config.label == "b" and runoff.chosen == "b"
    a = tried[1].evaluation
    assert next(b for b in a.budgets if b["name"] == "not-slower-than-fp32")["status"] == "missed"
    # Every int8 contender slower than fp32: fp32 ships.
    install({"fp32": 10.0, "a": 10.5, "b": 11.0})
    tried = [_attempt("fp32", "fp32", 12.0), _attempt("a", "int8", 8.0),
             _attempt("b", "int8", 8.5)]
    winner, _, runoff = _choose(tried)
    assert winner.config.label == "fp32" and runoff.chosen is None
    assert all(not t.evaluation.held for t in tried[1:])


def test_no_runoff_when_the_winner_is_clearly_fastest(fake):
    install, _ = fake
    backend = install({"fp32": 10.0, "int8": 5.0})
    tried = [_attempt("fp32", "fp32", 10.0), _attempt("int8", "int8", 5.0)]
    winner, _, runoff = _choose(tried)
    assert winner.config.label == "int8" and runoff is None
    assert set(backend.runs) == {"fp32", "int8"}  # the fp32 confirmation only
    # An fp32 winner with no close rival is not timed again at all.
    backend = install({"fp32": 10.0, "int8": 20.0})
    tried = [_attempt("fp32", "fp32", 10.0), _attempt("int8", "int8", 20.0)]
    winner, _, runoff = _choose(tried)
    assert winner.config.label == "fp32" and runoff is None and not backend.runs


def test_contenders_are_the_closest_few_and_search_first_keeps_to_the_group():
    def ev(label, ms, policy="p", held=True, where="host"):
        e = Evaluation(Configuration(label, "int8", policy, "", "ort"), latency_s=ms / 1e3,
                       latency_where=where,
                       budgets=[{"name": "accuracy", "status": "held" if held else "missed",
                                 "detail": ""}])
        return e
    winner = ev("w", 10.0, "a")
    rivals = [ev("r1", 11.4, "b"), ev("r2", 10.2, "a"), ev("r3", 10.9, "c"),
              ev("far", 12.0, "b"), ev("missed", 10.1, "b", held=False),
              ev("estimated", 10.1, "b", where="estimated")]
    every = [winner, *rivals]
    got = close_contenders(every, winner, "fastest", 0.15)
    assert [e.config.label for e in got] == ["w", "r2", "r3"][:search.RUNOFF_CONTENDERS]
    assert [e.config.label for e in close_contenders(every, winner, "first", 0.15)] == ["w", "r2"]
    # The margin widens with the winner's own spread, within bounds.
    assert search.runoff_margin(winner, 0.05) == search.RUNOFF_MARGIN
    assert search.runoff_margin(winner, 0.22) == pytest.approx(0.22)
    assert search.runoff_margin(winner, 3.0) == search.RUNOFF_MAX_MARGIN


@pytest.mark.parametrize("ms, rounds, most_s", [(700.0, 3, 30.0), (20.0, 4, 4.0), (0.05, 5, 1.0)])
def test_the_side_by_side_cost_is_bounded_by_the_models_latency(fake, ms, rounds, most_s):
    """A 700 ms detector: the minimum of rounds, 3 runs a block (warm-up included); a
    20 ms model: seconds; a 50 µs one: blocks of 20 ms."""
    install, clock = fake
    names = ["a", "b", "c", "fp32"]
    backend = install({n: ms for n in names})
    attempts = [_attempt(n, "int8", ms) for n in names]
    cap = min(max(plan.SIDE_BY_SIDE_FACTOR * ms / 1e3 * len(names), plan.SIDE_BY_SIDE_CAP_S[0]),
              plan.SIDE_BY_SIDE_CAP_S[1])
    record = {}
    medians = plan._interleaved(_ctx(), *attempts, seconds=cap, record=record)
    assert medians == pytest.approx((ms,) * 4)
    assert record["rounds"] == rounds and clock.now <= most_s
    if ms >= 100:
        assert all(n == 3 * rounds for n in backend.runs.values())


def _spec(path: Path) -> Path:
    path.write_text(f"""
target host
budget {{
  latency < 1 s p50 at batch 1
}}
accuracy {{
  metric top1-agreement
  tolerance 20 %
  data "{DATA}"
}}
optimize {{
  precision fp32
  prune up to 20 %
  backend ort
  search fastest
}}
""")
    return path


def test_a_compile_records_the_runoff(tmp_path, monkeypatch):
    """End to end on the digits model: with a margin wide enough that every candidate
    that holds is a contender, the manifest says between which the run-off was and which
    won, measurements.json has the medians, and the report prints them. The candidates
    are fp32 at 0, 10 and 20 % sparsity: all hold whatever their timings (int8 on this
    small model can be slower than fp32, and would then not contend)."""
    monkeypatch.setattr(search, "RUNOFF_MARGIN", 100.0)
    monkeypatch.setattr(search, "RUNOFF_MAX_MARGIN", 100.0)
    result = edgec.compile(DIGITS, _spec(tmp_path / "host.edge"), out=tmp_path / "out",
                           cache_dir=str(tmp_path / "cache"), threads=2)
    m, measured = result.manifest, result.artifact.measurements
    runoff = m["runoff"]
    held = [c["label"] for c in m["candidates"] if c["status"] in ("chosen", "held")]
    assert len(held) == 3 and sorted(runoff["between"]) == sorted(held), m["candidates"]
    assert runoff["fp32_reference"] is None  # no int8 contender: no fp32 check
    assert runoff["chosen"] == m["configuration"]["label"]
    assert runoff["rounds"] >= plan.CONFIRM_MIN_ROUNDS
    medians = measured["runoff"]["medians_ms"]
    assert set(medians) == set(runoff["between"])
    assert medians[runoff["chosen"]] == min(medians.values())
    for c in m["candidates"]:
        if c["label"] in runoff["between"] and c["status"] == "held":
            assert f"{runoff['chosen']} was faster side by side" in c["reason"]
    report = (tmp_path / "out" / "report.txt").read_text()
    assert "run-off: first latencies within" in report
    assert f"{medians[runoff['chosen']]:.3f} ms  chosen" in report
    assert "side-by-side" in measured["phases"]
