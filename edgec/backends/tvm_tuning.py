"""MetaSchedule tuning for the TVM backend.

Each task of the fused module is tuned in turn within the spec's trial or wall-time
budget. Records persist per target under ``cache_dir/tvm-tuning/<sha of the target
JSON>/`` (MetaSchedule's JSON database, plus a ledger of the trials granted per
workload), so that compiling the same model for the same target again runs no trials
and a larger budget tunes on from where the database stands. One process tunes a
target's database at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import io
import json
import logging
import os
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import TYPE_CHECKING

from edgec.backends.base import BuildOptions
from edgec.backends.tvm_rpc import check_rpc_tracker
from edgec.backends.tvm_target import is_cuda, target_dict, target_json

if TYPE_CHECKING:
    from edgec.dsl.spec import Target

TUNING_DIR = "tvm-tuning"
LEDGER_FILE = "edgec-trials.json"  # trials granted per workload (see tune)

# When only a wall-time budget is given, each task is offered this many trials.
TRIALS_PER_TASK_WITHOUT_BUDGET = 64
# Candidates measured per search round of a task (MetaSchedule's num_trials_per_iter).
TRIALS_PER_ROUND = 64


def tuning_database_dir(cache_dir: str | os.PathLike, target: Target) -> Path:
    """The target's tuning database folder in the cache (named by its TVM description)."""
    digest = hashlib.sha256(target_json(target).encode()).hexdigest()[:16]
    return Path(cache_dir) / TUNING_DIR / digest


def tune(mod, target, tvm_target, options: BuildOptions):
    """Tune every task of the fused module that the database lacks; return the module
    with the database's schedules applied, the tuning details and notes."""
    from tvm.s_tir import meta_schedule as ms

    notes: list[str] = []
    db_dir = _prepare_database_dir(target, options)
    tasks, dynamic = _tunable_tasks(mod, tvm_target, notes)
    cost_model = "xgb" if _has_xgboost() else "random"

    # One process tunes a target's database at a time; others wait for it.
    with open(db_dir / "lock", "w") as lock, tempfile.TemporaryDirectory() as work_dir, \
            _meta_schedule_logging():
        fcntl.flock(lock, fcntl.LOCK_EX)
        database = _open_database(db_dir, target, notes)
        ledger = _read_ledger(db_dir, notes)
        per_task, todo, keys = _trials_wanted(tasks, database, ledger, options)
        stopped_early = False
        if todo:
            stopped_early = _run_tuning(
                todo, per_task, keys, ledger, db_dir / LEDGER_FILE, database, target,
                work_dir, cost_model, options,
                builder=ms.builder.LocalBuilder(f_build=_build_candidate, timeout_sec=120),
                runner=_tuning_runner(options))
        mod, tuned_names = _apply_database(mod, tvm_target, database, tasks)

    details = _tuning_details(db_dir, cost_model, options, tasks, dynamic, per_task,
                                   tuned_names, stopped_early, notes)
    return mod, details, notes

def _prepare_database_dir(target, options: BuildOptions) -> Path:
    """The target's tuning database folder under the cache, with the target it is for."""
    db_dir = tuning_database_dir(options.cache_dir, target)
    db_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(db_dir / "target.json",
                      json.dumps(target_dict(target), indent=2, sort_keys=True) + "\n")
    _load_tensor_intrinsics(target)
    return db_dir

def _tunable_tasks(mod, tvm_target, notes: list[str]) -> tuple[list, list[str]]:
    """The fused module's tuning tasks MetaSchedule can tune, and the names of those it
    cannot (a kernel with a symbolic dimension)."""
    from tvm.s_tir import meta_schedule as ms

    tasks = ms.relax_integration.extract_tasks(mod, tvm_target)
    # MetaSchedule cannot tune a kernel with a symbolic dimension (one the batch
    # binding left, a sequence length say): those keep TVM's default schedule.
    dynamic = [task.task_name for task in tasks if _is_dynamic(task.dispatched[0])]
    tasks = [task for task in tasks if task.task_name not in dynamic]
    if dynamic:
        notes.append(f"{len(dynamic)} kernels have symbolic shapes, which MetaSchedule "
                     f"cannot tune, and keep TVM's default schedule: {', '.join(dynamic)}")
    return tasks, dynamic

def _trials_wanted(tasks, database, ledger: dict[str, int], options: BuildOptions):
    """Per task: its record (trials so far), and the tasks still owed trials with how
    many, and each task's workload key in the ledger."""
    import tvm_ffi

    # Each task's share of the budget is fixed by the model and the budget, so a
    # rebuild with the same budget finds every share spent and runs no trial,
    # and a larger budget tunes on from where the database stands.
    shares = split_trials(options.tuning_trials, len(tasks))
    recorded = _records_per_workload(database)
    # Trials granted per workload so far (the ledger): a task whose search space ran
    # dry records fewer trials than it was granted, and must not be retried.
    per_task: dict[str, dict] = {}
    todo = []
    keys = {}
    for task, share in zip(tasks, shares):
        key = str(tvm_ffi.structural_hash(task.dispatched[0]))
        keys[task.task_name] = key
        in_database = max(recorded.get(int(key), 0), ledger.get(key, 0))
        wanted = max(0, share - in_database) if options.tuning_trials else \
            (0 if in_database else share)
        per_task[task.task_name] = {"task": task.task_name, "trials": 0,
                                    "trials_in_database": in_database}
        if wanted:
            todo.append((task, wanted))
    return per_task, todo, keys

def _run_tuning(todo, per_task: dict[str, dict], keys: dict[str, str],
                ledger: dict[str, int], ledger_path: Path, database, target,
                work_dir: str, cost_model: str, options: BuildOptions, *,
                builder, runner) -> bool:
    """MetaSchedule run on each task owed trials, in turn, recording the trials in
    ``per_task`` and the ledger; returns whether the wall-time budget stopped it."""
    from tvm.s_tir import meta_schedule as ms

    progress = options.progress
    start = time.monotonic()
    stopped_early = False
    index = 0
    for index, (task, trials) in enumerate(todo):
        elapsed = time.monotonic() - start
        if options.tuning_seconds is not None and index > 0:
            # Stop between tasks when the next one would likely overrun.
            expected = elapsed / index
            if elapsed + expected > options.tuning_seconds:
                stopped_early = True
                break
        progress("tune", index, len(todo), f"{task.task_name}: {trials} trials")
        strategy = _search_strategy(per_task[task.task_name]["trials_in_database"],
                                    trials)
        per_task[task.task_name]["strategy"] = strategy
        contexts, weights = _tune_contexts(task, target, work_dir, options.seed,
                                           strategy)
        before = len(database)
        ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=work_dir,
                      max_trials_global=trials, max_trials_per_task=trials,
                      num_trials_per_iter=min(TRIALS_PER_ROUND, trials),
                      builder=builder, runner=runner, database=database,
                      cost_model=cost_model)
        per_task[task.task_name]["trials"] = len(database) - before
        key = keys[task.task_name]
        ledger[key] = per_task[task.task_name]["trials_in_database"] + trials
        # Atomically: a kill mid-write must not leave a ledger that fails every
        # later tuned compile for this target.
        _write_atomically(ledger_path, json.dumps(ledger, indent=1, sort_keys=True) + "\n")
    progress("tune", len(todo) if not stopped_early else index, len(todo),
             "tuning done" if not stopped_early else "wall time spent")
    return stopped_early

def _apply_database(mod, tvm_target, database, tasks):
    """``mod`` with the database's schedules applied, and the tasks it has one for."""
    from tvm import relax

    with tvm_target, database:
        mod = relax.transform.MetaScheduleApplyDatabase()(mod)
    tuned_names = {task.task_name for task in tasks
                   if database.query_tuning_record(task.dispatched[0], tvm_target,
                                                   task.task_name)}
    return mod, tuned_names

def _tuning_details(db_dir: Path, cost_model: str, options: BuildOptions, tasks,
                    dynamic: list[str], per_task: dict[str, dict], tuned_names: set[str],
                    stopped_early: bool, notes: list[str]) -> dict:
    """The manifest's account of the tuning; notes on kernels left untuned."""
    for entry in per_task.values():
        entry["tuned"] = entry["task"] in tuned_names
    untuned = [name for name, entry in per_task.items() if not entry["tuned"]]
    if untuned:
        why = "the wall-time budget ran out" if stopped_early else \
            "no candidate built and ran"
        notes.append(f"{len(untuned)} of {len(tasks)} kernels keep TVM's naive default "
                     f"schedule ({why}): {', '.join(untuned)}")
    if options.rpc is not None:
        notes.append(f"tuned on {options.rpc.where}")
    return {
        "database": f"{TUNING_DIR}/{db_dir.name}",
        "cost_model": cost_model,
        "trials_requested": options.tuning_trials,
        "seconds_requested": options.tuning_seconds,
        "trials_run": sum(entry["trials"] for entry in per_task.values()),
        "tasks_total": len(tasks),
        "tasks_dynamic": len(dynamic),
        "tasks_tuned": len(tuned_names),
        "tasks_untuned": len(untuned),
        "tasks_from_database": sum(1 for entry in per_task.values()
                                   if entry["trials"] == 0 and entry["tuned"]),
        "stopped_by_wall_time": stopped_early,
        "per_task": [per_task[task.task_name] for task in tasks],
    }

def split_trials(trials: int | None, tasks: int) -> list[int]:
    """Trials per task: the global budget split evenly, at least one each."""
    if tasks == 0:
        return []
    if not trials:
        return [TRIALS_PER_TASK_WITHOUT_BUDGET] * tasks
    base, extra = divmod(trials, tasks)
    return [max(1, base + (1 if index < extra else 0)) for index in range(tasks)]

def _tuning_runner(options: BuildOptions):
    from tvm.s_tir import meta_schedule as ms

    if options.rpc is None:
        return ms.runner.LocalRunner(timeout_sec=60)
    check_rpc_tracker(options.rpc)
    config = ms.runner.RPCConfig(tracker_host=options.rpc.host,
                                 tracker_port=options.rpc.port,
                                 tracker_key=options.rpc.key, session_timeout_sec=60)
    return ms.runner.RPCRunner(config)


def _load_tensor_intrinsics(target: Target, everything: bool = False) -> None:
    """Registers only the tensor intrinsics the target's schedule rules use.

    MetaSchedule's TuneContext imports ``tvm.s_tir.tensor_intrin``, which parses every
    intrinsic of every architecture (CUDA, ROCm, Hexagon, Arm, x86): 60-100 s on this
    2-core machine, in each compiling process. Plain x86 needs none of them, Arm
    targets need ``arm_cpu`` (the rules look up the NEON dot products), CUDA targets
    ``cuda``; ``everything`` adds the architecture's set whatever its features (x86
    with VNNI/AVX-512). A later full import in this process finds the package present.
    """
    name = "tvm.s_tir.tensor_intrin"
    if name not in sys.modules:
        import tvm.s_tir

        spec = importlib.util.find_spec(name)
        package = types.ModuleType(name, "Tensor intrinsics, loaded per target by edgec.")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules[name] = package
        tvm.s_tir.tensor_intrin = package
    wanted = {"aarch64": "arm_cpu", "armv7": "arm_cpu"}.get(target.arch)
    if everything and target.arch == "x86_64":
        wanted = "x86"
    for submodule in filter(None, [wanted, "cuda" if is_cuda(target) else None]):
        importlib.import_module(f"{name}.{submodule}")


def _open_database(db_dir, target, notes: list[str]):
    """The target's tuning database. Records that replay schedules with tensor
    intrinsics (x86 dot products, say) only load once those intrinsics are registered,
    so a failed load first registers the architecture's whole set; a database that
    still does not load (damaged by a crash) is moved aside and tuning starts afresh."""
    from tvm.s_tir import meta_schedule as ms

    def load():
        return ms.database.JSONDatabase(
            path_workload=str(db_dir / "database_workload.json"),
            path_tuning_record=str(db_dir / "database_tuning_record.json"),
            allow_missing=True)

    try:
        return load()
    except Exception:  # TVM raises RuntimeError/TVMError from C++ for unreadable records
        pass
    _load_tensor_intrinsics(target, everything=True)
    try:
        return load()
    except Exception as error:
        aside = _move_aside(db_dir, ("database_workload.json", "database_tuning_record.json",
                                     LEDGER_FILE))
        notes.append(f"the tuning database could not be read ({str(error).splitlines()[0]}); "
                     f"it was moved to {aside.name} and tuning started afresh")
        return load()


def _move_aside(db_dir: Path, names) -> Path:
    """Moves the damaged files ``names`` of a tuning database into ``damaged-<time>/``."""
    aside = db_dir / f"damaged-{int(time.time())}"
    aside.mkdir(exist_ok=True)
    for name in names:
        if (db_dir / name).exists():
            (db_dir / name).replace(aside / name)
    return aside


def _read_ledger(db_dir: Path, notes: list[str]) -> dict[str, int]:
    """The trials granted per workload so far (``edgec-trials.json``). One that does not
    read as such (a kill while an older edgec wrote it, an edit) is moved aside with a
    note: the database's own record counts then stand in for it."""
    path = db_dir / LEDGER_FILE
    try:
        ledger = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:  # ValueError: bad JSON or bad UTF-8
        problem = str(error).splitlines()[0] if str(error) else type(error).__name__
    else:
        if isinstance(ledger, dict) and all(
                isinstance(key, str) and type(value) is int and value >= 0
                for key, value in ledger.items()):
            return ledger
        problem = "not a map of workload hashes to trial counts"
    aside = _move_aside(db_dir, (LEDGER_FILE,))
    notes.append(f"the tuning ledger {LEDGER_FILE} could not be read ({problem}); it was "
                 f"moved to {aside.name}, and the database's records count the trials so far")
    return {}


def _write_atomically(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file in the same folder and a
    rename: readers see the old or the new content, never a partial one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


META_SCHEDULE_LOGGER = "tvm.s_tir.meta_schedule"


@contextlib.contextmanager
def _meta_schedule_logging():
    """Lets MetaSchedule configure its loggers, and keeps its console lines to itself.

    Each tuning call runs MetaSchedule's ``create_loggers``, which lists every handler of
    the ``tvm.s_tir.meta_schedule`` logger by name in a ``logging.config.dictConfig``: a
    handler it did not create itself breaks it — ``None.format`` (AttributeError) for an
    unnamed one, "Unable to add handler" for a named one. pytest 9.2 (not 9.0) attaches its
    unnamed capture handler to every non-propagating logger, which that one is after the
    first tuning in a process (so the second tuning test failed in a fresh venv). Such
    handlers are detached while MetaSchedule runs and put back afterwards. MetaSchedule's
    console handler writes to ``sys.stdout`` as it is when the handler is made: a buffer
    here, so that "[INFO] Logging directory: ..." does not leak into edgec's output.
    """
    logger = logging.getLogger(META_SCHEDULE_LOGGER)
    foreign = [handler for handler in logger.handlers
               if not (handler.get_name() or "").startswith(META_SCHEDULE_LOGGER)]
    for handler in foreign:
        logger.removeHandler(handler)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for handler in foreign:
            if handler not in logger.handlers:
                logger.addHandler(handler)


def _search_strategy(trials_in_database: int, trials: int) -> str:
    """MetaSchedule's search strategy for a task.

    Evolutionary search ranks its population with the cost model, which answers with
    random scores until it has seen 100 measurements (XGBModel's warm-up), and seeds
    the population from the database's records of the task. A task with no record,
    tuned in one round, gains nothing from it over sampling random schedules
    ("replay-trace"), which costs a fraction: 27-33 s against 117-168 s for a 2-trial
    conv task on this loaded 2-core machine.
    """
    return "replay-trace" if trials_in_database == 0 and trials <= TRIALS_PER_ROUND \
        else "evolutionary"


def _tune_contexts(task, target, work_dir: str, seed: int, strategy: str = "evolutionary"):
    """MetaSchedule's tune context for one task, loading intrinsics its rules ask for."""
    from tvm.s_tir import meta_schedule as ms

    try:
        contexts = ms.relax_integration.extracted_tasks_to_tune_contexts(
            [task], work_dir=work_dir, seed=seed, strategy=strategy)
    except ValueError as error:
        if "TensorIntrin" not in str(error):
            raise
        _load_tensor_intrinsics(target, everything=True)
        contexts = ms.relax_integration.extracted_tasks_to_tune_contexts(
            [task], work_dir=work_dir, seed=seed, strategy=strategy)
    # MetaSchedule logs every round to the console; edgec reports through progress
    # instead (MetaSchedule's log files go to the temporary work dir).
    for name in list(logging.root.manager.loggerDict):
        if not name.startswith("tvm.s_tir.meta_schedule"):
            continue
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
    return contexts


def _build_candidate(mod, target, _params):
    """MetaSchedule's builder function without ``import tvm.s_tir.tensor_intrin``.

    The default build imports the tensor intrinsics in every fresh worker (about 30 s
    here), past any sensible build timeout; fp32 schedules do not use them.
    """
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def _is_dynamic(task_mod) -> bool:
    """Whether a tuning task's kernel has a symbolic (non-constant) buffer dimension."""
    import tvm

    for func in task_mod.functions.values():
        for param in getattr(func, "params", []):
            try:
                shape = param.shape
            except AttributeError:
                return True  # a scalar parameter: a shape variable passed in
            if any(not isinstance(dim, tvm.tirx.IntImm) for dim in shape):
                return True
    return False



def _records_per_workload(database) -> dict[int, int]:
    """How many tuning records (trials) the database holds per workload's structural hash."""
    import tvm_ffi

    counts: dict[int, int] = {}
    for record in database.get_all_tuning_records():
        key = tvm_ffi.structural_hash(record.workload.mod)
        counts[key] = counts.get(key, 0) + 1
    return counts


def _has_xgboost() -> bool:
    try:
        import xgboost  # noqa: F401
    except ImportError:
        return False
    return True
