"""The plan: every configuration the spec allows tried in order (`search.configurations`),
each evaluated in its own folder (`evaluate.evaluate`), the winner chosen
(`search.choose`), and its files kept in the staging folder."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass

from edgec.backends import auto_backends, capabilities, get_backend
from edgec.backends.base import BuildOptions, Progress, RpcConfig
from edgec.diagnostics import Diagnostic, DiagnosticSink, EdgecError, ModelError, UsageError
from edgec.metrics import cannot_discriminate
from edgec.planner.evaluate import Attempt, Context, evaluate
from edgec.planner.samples import prepare_samples
from edgec.planner.search import (Evaluation, Skipped, choose, close_contenders,
                                  configurations, reject_slower_than_fp32, runoff_margin)


@dataclass
class Plan:
    """What the planner tried and chose, for the manifest and the measurements."""

    ctx: Context
    nodes_before: int            # the imported model's, before any pass
    data_note: str               # which samples accuracy was checked on
    layout: dict                 # the data's layout and how it was decided
    caveat: str | None           # why the metric may not tell candidates apart
    tried: list[Attempt]
    skipped: list[Skipped]       # configurations the spec allows that cannot be tried here
    evaluations: list[Evaluation]  # those built
    winner: Evaluation | None    # None: no configuration holds every budget
    best: Evaluation             # the winner, or the best of those that miss
    chosen: Attempt              # best's attempt
    phases: dict[str, float]     # compile seconds per phase (load, passes, calibrate, ...)
    runoff: Runoff | None = None  # close candidates timed again side by side


def make_plan(*, model_path: str, model_bytes: bytes, data_pattern: str | None, spec,
         staging: str, cache_dir: str, sink: DiagnosticSink, backend_choice: str,
         rpc: RpcConfig | None, threads: int | None, progress: Progress) -> Plan:
    """Try the configurations ``spec`` allows on ``backend_choice`` (auto, or a backend's
    name) in folders under ``staging`` and choose one; its files are left in ``staging``."""
    from edgec.frontend.onnx_import import import_model, parse_model_bytes

    from edgec.progress import PhaseClock

    # Compile time per phase, for measurements.json and the report.
    clock = PhaseClock(progress, names={"plan": "passes"})
    progress = clock
    base_dir = os.path.dirname(os.path.abspath(model_path))
    original = parse_model_bytes(model_bytes, model_path)
    nodes_before = import_model(original, base_dir=base_dir, source=model_path).node_count()
    samples = prepare_samples(spec, original, model_path, data_pattern, sink)
    batch = spec.budget.latency.batch if spec.budget.latency else 1
    tuning = spec.optimize.tuning
    ctx = Context(
        spec=spec, model_path=model_path, model_bytes=model_bytes, original=original,
        base_dir=base_dir, staging=staging, cache_dir=cache_dir, sink=sink,
        calibration=samples.calibration, evaluation=samples.evaluation,
        reference=samples.reference, labels=samples.labels, bench_inputs=samples.bench_inputs,
        at_hand=target_at_hand(spec.target), layout=samples.layout,
        build_options=BuildOptions(
            cache_dir=cache_dir, tuning_trials=tuning.trials,
            tuning_seconds=tuning.wall_time.to("s") if tuning.wall_time is not None else None,
            seed=spec.optimize.seed, threads=threads, rpc=rpc, batch=batch, progress=progress))
    caveat = cannot_discriminate(spec.accuracy.metric, ctx.reference)
    if caveat:
        sink.warning(caveat)
    if rpc is not None:
        check_rpc(rpc, backend_choice)
    tried, skipped = _search(ctx, backend_choice)
    evaluations = [t.evaluation for t in tried if t.skipped is None]
    winner, best, runoff = _choose_not_slower_than_fp32(ctx, tried, evaluations)
    result = Plan(ctx, nodes_before, samples.note,
                  {"layout": samples.layout, "how": samples.layout_how}, caveat, tried,
                  skipped, evaluations, winner, best,
                  chosen=next(t for t in tried if t.evaluation is best),
                  phases=clock.finish(), runoff=runoff)
    _keep_chosen(result, staging, sink)
    return result


# Candidates timed again side by side (the int8 winner against fp32, close candidates
# in a run-off): rounds, each candidate's block of runs after a warm-up, the median of
# its blocks kept.
CONFIRM_ROUNDS = 5      # at most ...
CONFIRM_MIN_ROUNDS = 3  # ... and at least, whatever the time cap says
CONFIRM_RUNS = 5      # timed runs per candidate per round, at least ...
CONFIRM_BLOCK_S = 0.02  # ... and until the block has taken this long (a 50 µs model: 400)
CONFIRM_MAX_RUNS = 2000
CONFIRM_SLOW_BLOCK_S = 0.5  # a block this long ends after 2 runs (a 700 ms detector)
CONFIRM_WARMUP = 3    # untimed runs after each load (1 when one run takes CONFIRM_SLOW_RUN_S)
CONFIRM_SLOW_RUN_S = 0.1
# Rounds past CONFIRM_MIN_ROUNDS are run while the side-by-side timing has taken less
# than SIDE_BY_SIDE_FACTOR times one pass over the candidates' first latencies, within
# SIDE_BY_SIDE_CAP_S: a 20 ms model adds seconds to the compile, not minutes.
SIDE_BY_SIDE_FACTOR = 40.0
SIDE_BY_SIDE_CAP_S = (2.0, 20.0)


@dataclass
class Runoff:
    """Candidates whose first latencies were too close to tell apart, timed again side by
    side (`_interleaved`); the fastest median won."""

    between: list[str]            # labels, fastest first measurement first
    first_ms: dict[str, float]    # label -> its first measurement (the spec's percentile)
    medians_ms: dict[str, float]  # label -> its median over the interleaved rounds
    margin: float                 # rivals within this fraction of the winner's first time
    rounds: int
    chosen: str | None            # None: every one was slower than fp32 side by side
    fp32_reference: str | None = None  # timed with them for not-slower-than-fp32
    fp32_ms: float | None = None

    def manifest_record(self) -> dict:
        """What happened (the figures, which differ between runs, are measurements')."""
        return {"between": self.between, "chosen": self.chosen, "margin": self.margin,
                "rounds": self.rounds, "fp32_reference": self.fp32_reference,
                "medians": "measurements.json"}

    def measurements_record(self) -> dict:
        return {"first_ms": self.first_ms, "medians_ms": self.medians_ms,
                **({"fp32_ms": self.fp32_ms} if self.fp32_ms is not None else {})}


def _choose_not_slower_than_fp32(ctx: Context, tried: list[Attempt],
                                 evaluations: list[Evaluation]):
    """`choose`, after `reject_slower_than_fp32`, made robust to timing noise on this
    host: rivals whose first latency is close to the winner's (`close_contenders`) are
    timed again in a run-off, side by side in alternating rounds, and the fastest median
    wins; int8 ones are timed against fp32 in the same rounds (candidates are measured
    one after another, minutes apart on a busy machine), and one slower there misses
    "not-slower-than-fp32": the fastest of the others wins, or the choice is made again.
    Returns (winner, best, the run-off or None)."""
    fp32 = reject_slower_than_fp32(evaluations)
    search = ctx.spec.optimize.search
    attempts = {id(t.evaluation): t for t in tried}
    runoff = None
    while True:
        winner, best = choose(evaluations, search)
        if winner is None or winner.latency_where != "host":
            return winner, best, runoff
        margin = runoff_margin(winner, _spread(attempts[id(winner)]))
        contenders = close_contenders(evaluations, winner, search, margin)
        check_fp32 = fp32 is not None and fp32.latency_where == "host" and any(
            e.config.precision == "int8" for e in contenders)
        timed = contenders + ([fp32] if check_fp32 and fp32 not in contenders else [])
        if len(timed) == 1:
            return winner, best, runoff
        first_s = sum(e.latency_s for e in timed)
        cap_s = min(max(SIDE_BY_SIDE_FACTOR * first_s, SIDE_BY_SIDE_CAP_S[0]),
                    SIDE_BY_SIDE_CAP_S[1])
        ctx.build_options.progress(
            "side-by-side", 0, None,
            ("run-off: " if len(contenders) > 1 else "against fp32: ")
            + ", ".join(e.config.label for e in timed))
        done: dict = {}
        medians = dict(zip(map(id, timed), _interleaved(
            ctx, *(attempts[id(e)] for e in timed), seconds=cap_s, record=done)))
        for e in contenders:
            if check_fp32 and e.config.precision == "int8":
                verdict = next(b for b in e.budgets if b["name"] == "not-slower-than-fp32")
                verdict["detail"] += (f"; side by side, interleaved: {medians[id(e)]:.3g} ms "
                                      f"against {medians[id(fp32)]:.3g} ms")
                if medians[id(e)] > medians[id(fp32)]:
                    verdict["status"] = "missed"
        standing = [e for e in contenders if e.held]
        chosen = min(standing, key=lambda e: medians[id(e)]) if standing else None
        if len(contenders) > 1:
            runoff = Runoff(
                between=[e.config.label for e in contenders],
                first_ms={e.config.label: e.latency_s * 1e3 for e in contenders},
                medians_ms={e.config.label: medians[id(e)] for e in contenders},
                margin=round(margin, 3), rounds=done.get("rounds", 0),
                chosen=chosen.config.label if chosen is not None else None,
                fp32_reference=fp32.config.label if check_fp32 else None,
                fp32_ms=medians[id(fp32)] if check_fp32 else None)
        if chosen is not None:
            return chosen, chosen, runoff
        # Every contender was int8 and slower than fp32 side by side: all now miss
        # not-slower-than-fp32, so `choose` picks among the others.


def _spread(attempt: Attempt) -> float | None:
    """(p90 - p50) / p50 of the attempt's first measurement: its own noise."""
    lat = attempt.latency
    if lat is None or not lat.p50:
        return None
    return (lat.p90 - lat.p50) / lat.p50


def _interleaved(ctx: Context, *attempts: Attempt, seconds: float | None = None,
                 record: dict | None = None) -> tuple[float, ...]:
    """Median ms of each attempt on the benchmark inputs, timed in alternating rounds
    with one candidate loaded at a time. The artifact keeps onnxruntime's deployment
    settings, pool threads that spin after each run included; two sessions alive and run
    in turn spin against each other's runs (on 2 cores the same graph given as both
    candidates timed 1.6-2x its time alone, and the pair's ratio wandered), so each round
    loads a candidate, warms it, times a block of runs and releases it before the next
    is loaded (tests/planner/test_candidate_timing.py). CONFIRM_MIN_ROUNDS rounds are
    run, and more up to CONFIRM_ROUNDS while the whole has taken less than ``seconds``
    (None: no cap); ``record`` gets the number of rounds run and the seconds taken."""
    import gc
    import statistics

    blocks: list[list[float]] = [[] for _ in attempts]
    began = time.perf_counter()
    rounds = 0
    while rounds < CONFIRM_ROUNDS:
        elapsed = time.perf_counter() - began
        if rounds >= CONFIRM_MIN_ROUNDS and seconds is not None \
                and elapsed + elapsed / rounds > seconds:
            break  # the next round would end past the cap
        for i, attempt in enumerate(attempts):
            runner = get_backend(attempt.evaluation.config.backend).load(
                attempt.folder, attempt.result.details)
            feed = {k: ctx.bench_inputs[k] for k in runner.input_names}
            for _ in range(CONFIRM_WARMUP):
                start = time.perf_counter()
                runner.run(feed)
                if time.perf_counter() - start >= CONFIRM_SLOW_RUN_S:
                    break  # a slow model is warm after one run
            times: list[float] = []
            while not _block_done(times):
                start = time.perf_counter()
                runner.run(feed)
                times.append(time.perf_counter() - start)
            blocks[i].append(statistics.median(times))
            del runner
            gc.collect()  # the session and its pool threads end before the next load
        rounds += 1
    if record is not None:
        record.update(rounds=rounds, seconds=time.perf_counter() - began)
    return tuple(statistics.median(b) * 1e3 for b in blocks)


def _block_done(times: list[float]) -> bool:
    """Whether a block of timed runs is long enough: CONFIRM_RUNS runs (a slow model's
    block ends after 2 once it has taken CONFIRM_SLOW_BLOCK_S) that together take at
    least CONFIRM_BLOCK_S (a fast model's block runs on, up to CONFIRM_MAX_RUNS)."""
    total = sum(times)
    enough_runs = len(times) >= CONFIRM_RUNS or (len(times) >= 2 and total >= CONFIRM_SLOW_BLOCK_S)
    long_enough = total >= CONFIRM_BLOCK_S or len(times) >= CONFIRM_MAX_RUNS
    return enough_runs and long_enough


def target_at_hand(target) -> bool:
    """Whether the target is this machine, so that candidates are measured here."""
    from edgec.dsl.host import architecture
    return target.accelerator is None and target.arch == architecture()


def check_rpc(rpc: RpcConfig, choice: str) -> None:
    """Before any work: an RPC tracker only serves backends measured over TVM RPC, and
    it must answer with a device under the key (exit 2 otherwise)."""
    if choice != "auto":
        try:
            over_rpc = capabilities(choice).measures_over_rpc
        except EdgecError:
            return  # the configuration step reports an unknown backend
        if not over_rpc:
            able = [n for n in auto_backends()[0] if capabilities(n).measures_over_rpc]
            raise UsageError(Diagnostic.error(
                f"the {choice} backend cannot be measured (or tuned) over TVM RPC: drop "
                "--rpc-tracker/--rpc-key and measure the artifact on the device with "
                f"`edgec bench` there, or use --backend {' or '.join([*able, 'auto'])}"))
    from edgec.backends.tvm import check_rpc_tracker

    check_rpc_tracker(rpc)


def _search(ctx: Context, choice: str) -> tuple[list[Attempt], list[Skipped]]:
    """The configurations evaluated in order; with ``search first``, until a group of
    them holds every budget."""
    from edgec.passmgr import default_registry

    spec, progress = ctx.spec, ctx.build_options.progress
    configs, skipped = configurations(spec, spec.target, choice, set(default_registry().names()),
                                      model_ops=_op_types(ctx.original.graph))
    if not configs:
        raise UsageError(Diagnostic.error(
            "the spec allows no configuration that can be built here",
            notes=[f"{s.label}: {s.reason}" for s in skipped]))
    tried: list[Attempt] = []
    for index, config in enumerate(configs):
        done_group = tried and tried[-1].evaluation.config.group != config.group
        if done_group and spec.optimize.search == "first" and any(
                t.evaluation.held for t in tried):
            break  # the previous group holds; its backends were all measured
        progress("plan", index, len(configs), config.label)
        start = time.perf_counter()
        attempt = evaluate(config, index, ctx, explicit_backend=choice != "auto", rivals=tried)
        attempt.seconds = time.perf_counter() - start
        tried.append(attempt)
    built = sum(t.skipped is None for t in tried)
    rest = len(configs) - len(tried)
    progress("plan", len(configs), len(configs),
             f"done: {built} built" + (f", {len(tried) - built} skipped"
                                       if built < len(tried) else "")
             + (f", {rest} not needed (search first: an earlier one holds)" if rest else ""))
    return tried, skipped


def _op_types(graph) -> frozenset[str]:
    """The op types of an ONNX graph and its subgraphs, plus ``Softmax->MatMul`` where a
    Softmax's output is a MatMul's input (attention's P·V; a classifier's output Softmax
    is not)."""
    ops: set[str] = set()
    softmaxed = {o for node in graph.node if node.op_type == "Softmax" for o in node.output}
    for node in graph.node:
        ops.add(node.op_type)
        if node.op_type == "MatMul" and softmaxed.intersection(node.input):
            ops.add("Softmax->MatMul")
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                ops |= _op_types(sub)
    return frozenset(ops)


def _keep_chosen(plan: Plan, staging: str, sink: DiagnosticSink) -> None:
    """The chosen candidate's files moved up into ``staging``; every candidate's folder
    removed; warnings about the chosen module."""
    chosen = plan.chosen
    if chosen.result is None:
        raise ModelError(Diagnostic.error(
            "no configuration could be built: "
            + "; ".join(f"{t.evaluation.config.label}: {t.evaluation.error}" for t in plan.tried)))
    for name in os.listdir(chosen.folder):
        os.replace(os.path.join(chosen.folder, name), os.path.join(staging, name))
    for t in plan.tried:
        shutil.rmtree(t.folder, ignore_errors=True)
    if chosen.int8 and not chosen.int8["representative"]:
        sink.warning(f"int8 accuracy: {chosen.int8['scoring']}")
    if not chosen.result.tuned:
        sink.warning(f"the {chosen.result.backend} module is untuned: expect it to be far slower "
                     "than a tuned one; give the spec a tuning budget")
