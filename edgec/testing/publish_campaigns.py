"""Campaigns against publishing and the build cache (issue 12, campaigns c and d).

    python3 -m edgec.testing.publish_campaigns concurrency --processes 8 --rounds 50
    python3 -m edgec.testing.publish_campaigns faults

``concurrency`` runs, round after round, P ``edgec compile`` processes at once with
the ort backend on ``spec_examples/digits.onnx``:

- ``same-out``: all into one OUT, half with spec A and half with spec B (two cache
  keys, so OUT keeps changing hands: builds in the first round, cache copies and
  no-ops after), while a watcher keeps opening OUT and checking it;
- ``shared-cache``: each into its own OUT, all on one cache; even rounds use a new
  spec (all P build the same key and store it at once), odd rounds reuse it, every
  other one after zeroing a file of the cache entry (all P find it corrupt, discard
  it and rebuild).

It counts internal errors (exit 1, "internal error", a traceback), other failures,
times OUT was seen missing or not whole (a manifest and every file it lists matching
its sha256), and staging or temporary entries (``.edgec-``) left in OUT's folder and in
the cache once a round is over.

``faults`` kills ``edgec compile`` (``EDGEC_FAULT=KIND:N``, SIGKILL) at every step of
publishing OUT (``publish``), of storing in and copying from the cache (``cache``) and
of writing a file (``write``), in three situations (a build into an empty cache, a
copy from the cache, a corrupt cache entry), with both the renameat2 exchange and the
fallback protocol (``EDGEC_NO_RENAMEAT2``). After each kill OUT must be the old
artifact or the new one (with the fallback protocol it may also be missing while the
old one waits, whole, under ``.OUT.edgec-old-*``); the next compile must exit 0, leave
OUT the new artifact and leave no leftovers.

Both print a summary (``--json`` for one JSON document) and exit 1 when anything
failed. ``--sample`` runs the short version that the test suite runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgec import artifact as art

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "spec_examples" / "digits.onnx"
DATA = REPO / "spec_examples" / "data" / "digits.npz"


def write_spec(path: Path, tolerance: str = "1 %", seed: int = 0) -> Path:
    path.write_text(f"""target host
budget {{
  latency < 500 ms p50 at batch 1
}}
accuracy {{
  metric top1-agreement
  tolerance {tolerance}
  data "{DATA}"
}}
optimize {{
  precision fp32
  backend ort
  seed {seed}
}}
""")
    return path


def _env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    root = str(REPO)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for name in ("EDGEC_FAULT", "EDGEC_FAULT_TRACE", "EDGEC_NO_RENAMEAT2"):
        env.pop(name, None)
    env.update(extra or {})
    return env


def compile_cmd(spec: Path, out: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "edgec", "compile", str(DIGITS), "--spec", str(spec),
            "-o", str(out), "--cache-dir", str(cache), "-q"]


SWAPPED = "swapped out while being read"


def whole(out: Path) -> str | None:
    """None when ``out`` is a whole artifact, else what is wrong. Read through one
    descriptor of the folder, as a consumer opening it at that instant would. When the
    folder read is no longer the one at ``out`` by the end (another compile swapped a
    new artifact in and is removing the old one), the answer is `SWAPPED`: what was
    read is not OUT any more, and says nothing about OUT."""
    try:
        fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable: {e.strerror}"
    try:
        manifest = art.read_manifest(str(out), dir_fd=fd)
        if manifest is None:
            problem = "no edgec manifest"
        else:
            problems = art.verify_files(str(out), manifest, dir_fd=fd)
            problem = "; ".join(problems) if problems else None
        if problem:
            read, now = os.fstat(fd), None
            try:
                now = os.stat(out)
            except OSError:
                pass
            if now is None or (read.st_dev, read.st_ino) != (now.st_dev, now.st_ino):
                return SWAPPED
        return problem
    finally:
        os.close(fd)


def key_of(out: Path) -> str | None:
    manifest = art.read_manifest(str(out))
    return manifest.get("cache_key") if manifest else None


def leftovers(*folders: Path) -> list[str]:
    found = []
    for folder in folders:
        if folder.is_dir():
            found += [str(folder / n) for n in os.listdir(folder) if ".edgec-" in n]
    return found


def internal(rc: int, stderr: str) -> bool:
    return rc == 1 or "internal error" in stderr or "Traceback" in stderr


# --------------------------------------------------------------------------- concurrency


@dataclass
class ConcurrencyFigures:
    mode: str
    processes: int
    rounds: int
    fallback: bool = False
    compiles: int = 0
    exit_codes: dict = field(default_factory=dict)
    internal_errors: int = 0
    other_failures: int = 0
    observations: int = 0
    out_missing: int = 0
    out_not_whole: int = 0
    swapped_while_read: int = 0  # the folder read was swapped out meanwhile: not counted
    ends_not_whole: int = 0
    leftovers: int = 0
    seconds: float = 0.0
    examples: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        # The fallback protocol has OUT missing between its two renames, by design.
        missing = 0 if self.fallback else self.out_missing
        return not (self.internal_errors or self.other_failures or missing
                    or self.out_not_whole or self.ends_not_whole or self.leftovers)


def _launch(cmds: list[list[str]], env: dict) -> list[tuple[int, str]]:
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=env) for c in cmds]
    return [(p.wait(), p.stderr.read()) for p in procs]


def _tally(fig: ConcurrencyFigures, results: list[tuple[int, str]]) -> None:
    for rc, err in results:
        fig.compiles += 1
        fig.exit_codes[str(rc)] = fig.exit_codes.get(str(rc), 0) + 1
        if internal(rc, err):
            fig.internal_errors += 1
            fig.examples.append(err.strip().splitlines()[-3:])
        elif rc != 0:
            fig.other_failures += 1
            fig.examples.append(err.strip().splitlines()[-3:])


class _Watcher(threading.Thread):
    """Keeps checking OUT while the round runs."""

    def __init__(self, out: Path, fig: ConcurrencyFigures):
        super().__init__(daemon=True)
        self.out, self.fig, self.stop = out, fig, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            problem = whole(self.out)
            self.fig.observations += 1
            if problem == SWAPPED:
                self.fig.swapped_while_read += 1
            elif problem == "missing":
                self.fig.out_missing += 1
            elif problem:
                self.fig.out_not_whole += 1
                if len(self.fig.examples) < 20:
                    self.fig.examples.append(f"OUT seen not whole: {problem}")
            time.sleep(0.002)


def _protocol(fallback: bool) -> dict:
    return {"EDGEC_NO_RENAMEAT2": "1"} if fallback else {}


def concurrency_same_out(work: Path, processes: int, rounds: int,
                         fallback: bool = False) -> ConcurrencyFigures:
    fig = ConcurrencyFigures("same-out", processes, rounds, fallback)
    specs = [write_spec(work / "a.edge", "1 %"), write_spec(work / "b.edge", "2 %")]
    out, cache = work / "out" / "model", work / "cache"
    env = _env(_protocol(fallback))
    start = time.perf_counter()
    for r in range(rounds):
        watcher = None
        if out.exists():  # from the first publish on, OUT must never be missing
            watcher = _Watcher(out, fig)
            watcher.start()
        results = _launch([compile_cmd(specs[(i + r) % 2], out, cache)
                           for i in range(processes)], env)
        if watcher:
            watcher.stop.set()
            watcher.join()
        _tally(fig, results)
        if whole(out):
            fig.ends_not_whole += 1
        left = leftovers(out.parent, cache / "artifacts")
        fig.leftovers += len(left)
        fig.examples += left[:3]
    fig.seconds = round(time.perf_counter() - start, 1)
    return fig


def concurrency_shared_cache(work: Path, processes: int, rounds: int,
                             fallback: bool = False) -> ConcurrencyFigures:
    fig = ConcurrencyFigures("shared-cache", processes, rounds, fallback)
    cache = work / "cache"
    outs = [work / "outs" / f"m{i}" for i in range(processes)]
    env = _env(_protocol(fallback))
    start = time.perf_counter()
    spec = None
    for r in range(rounds):
        if r % 2 == 0:
            spec = write_spec(work / f"s{r}.edge", seed=r)
        else:
            # New OUTs: each process must copy this round's entry from the cache.
            for o in outs:
                shutil.rmtree(o, ignore_errors=True)
        if r % 4 == 3:
            # Zero a file of the entry, keeping its size: every process must find it out.
            model = cache / "artifacts" / str(key_of(outs[0])) / "model.onnx"
            if model.exists():
                model.write_bytes(b"\0" * model.stat().st_size)
        results = _launch([compile_cmd(spec, o, cache) for o in outs], env)
        _tally(fig, results)
        keys = set()
        for o in outs:
            fig.observations += 1
            problem = whole(o)
            if problem:
                fig.ends_not_whole += 1
                fig.examples.append(f"{o}: {problem}")
            keys.add(key_of(o))
        if len(keys) != 1:
            fig.ends_not_whole += 1
            fig.examples.append(f"round {r}: the OUTs hold {len(keys)} different keys")
        entries = [e for e in (cache / "artifacts").iterdir() if not e.name.startswith(".")]
        for e in entries:
            problem = whole(e)
            if problem:
                fig.ends_not_whole += 1
                fig.examples.append(f"cache entry {e.name[:12]}: {problem}")
        left = leftovers(work / "outs", cache / "artifacts")
        fig.leftovers += len(left)
        fig.examples += left[:3]
    fig.seconds = round(time.perf_counter() - start, 1)
    return fig


# --------------------------------------------------------------------------- faults


@dataclass
class FaultFigures:
    trials: int = 0
    killed: int = 0
    completed: int = 0
    after_kill_out_old: int = 0
    after_kill_out_new: int = 0
    after_kill_out_aside: int = 0     # fallback only: OUT missing, the old one whole aside
    after_kill_bad: int = 0           # OUT missing (exchange), partial, or lost
    recover_failed: int = 0           # the next compile failed, or left OUT wrong
    leftovers: int = 0
    points: dict = field(default_factory=dict)
    seconds: float = 0.0
    examples: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.after_kill_bad or self.recover_failed or self.leftovers)


class _FaultLab:
    """Pristine artifacts and caches, built once, copied into place for each trial."""

    def __init__(self, work: Path):
        self.work = work
        self.spec_a = write_spec(work / "a.edge", "1 %")
        self.spec_b = write_spec(work / "b.edge", "2 %")
        lab = work / "lab"
        env = _env()
        for spec, out in ((self.spec_a, lab / "a"), (self.spec_b, lab / "b")):
            r = subprocess.run(compile_cmd(spec, out, lab / "cache"), env=env,
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"cannot build the campaign's artifacts: {r.stderr}")
        self.key_a, self.key_b = key_of(lab / "a"), key_of(lab / "b")
        self.lab = lab

    def prepare(self, trial: Path, situation: str) -> tuple[Path, Path]:
        """OUT holds artifact A; the cache holds A, plus B for ``copy``, plus a corrupt
        B for ``corrupt``."""
        out, cache = trial / "out" / "model", trial / "cache"
        shutil.copytree(self.lab / "a", out)
        (cache / "artifacts").mkdir(parents=True)
        shutil.copytree(self.lab / "cache" / "artifacts" / self.key_a,
                        cache / "artifacts" / self.key_a)
        if situation in ("copy", "corrupt"):
            entry = cache / "artifacts" / self.key_b
            shutil.copytree(self.lab / "cache" / "artifacts" / self.key_b, entry)
            if situation == "corrupt":
                size = (entry / "model.onnx").stat().st_size
                (entry / "model.onnx").write_bytes(b"\0" * size)
        return out, cache

    def steps(self, situation: str, kind: str, fallback: bool) -> list[str]:
        trial = Path(tempfile.mkdtemp(dir=self.work, prefix="trace-"))
        out, cache = self.prepare(trial, situation)
        trace = trial / "trace.txt"
        extra = {"EDGEC_FAULT_TRACE": str(trace)}
        if fallback:
            extra["EDGEC_NO_RENAMEAT2"] = "1"
        r = subprocess.run(compile_cmd(self.spec_b, out, cache), env=_env(extra),
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"the traced compile failed: {r.stderr}")
        lines = trace.read_text().splitlines() if trace.exists() else []
        shutil.rmtree(trial, ignore_errors=True)
        return [line for line in lines if line.split(":", 1)[0] == kind]


def faults(work: Path, *, situations=("build", "copy", "corrupt"),
           kinds=("publish", "cache", "write"), protocols=(False, True),
           limit: int | None = None, only: tuple[str, ...] = (),
           progress=None) -> FaultFigures:
    """Kill at every step (the first ``limit`` of each kind; or only the steps whose
    description contains one of ``only``)."""
    fig = FaultFigures()
    start = time.perf_counter()
    lab = _FaultLab(work)
    for fallback in protocols:
        for situation in situations:
            for kind in kinds:
                steps = lab.steps(situation, kind, fallback)
                for n, step in enumerate(steps[:limit] if limit else steps, start=1):
                    if only and not any(o in step for o in only):
                        continue
                    name = (f"{'fallback' if fallback else 'exchange'}/{situation}/"
                            f"{kind}:{n} ({step.split(' ', 1)[1] if ' ' in step else ''})")
                    fig.points[name] = _fault_trial(lab, fig, situation, kind, n, fallback)
                    if progress:
                        progress(f"{name}: {fig.points[name]}")
    fig.seconds = round(time.perf_counter() - start, 1)
    return fig


def _fault_trial(lab: _FaultLab, fig: FaultFigures, situation: str, kind: str, n: int,
                 fallback: bool) -> str:
    trial = Path(tempfile.mkdtemp(dir=lab.work, prefix="trial-"))
    try:
        out, cache = lab.prepare(trial, situation)
        extra = {"EDGEC_FAULT": f"{kind}:{n}"}
        if fallback:
            extra["EDGEC_NO_RENAMEAT2"] = "1"
        fig.trials += 1
        r = subprocess.run(compile_cmd(lab.spec_b, out, cache), env=_env(extra),
                           capture_output=True, text=True)
        if r.returncode == -9:
            fig.killed += 1
        else:
            fig.completed += 1
        problem, key = whole(out), key_of(out)
        if problem is None and key == lab.key_a:
            state = "old"
            fig.after_kill_out_old += 1
        elif problem is None and key == lab.key_b:
            state = "new"
            fig.after_kill_out_new += 1
        elif problem == "missing" and fallback and any(
                whole(p) is None and key_of(p) == lab.key_a
                for p in out.parent.glob(f".{out.name}.edgec-old-*")):
            state = "aside"
            fig.after_kill_out_aside += 1
        else:
            state = f"BAD: {problem}"
            fig.after_kill_bad += 1
            fig.examples.append(f"{kind}:{n} {situation} fallback={fallback}: OUT {problem}")
        again = subprocess.run(compile_cmd(lab.spec_b, out, cache), env=_env(),
                               capture_output=True, text=True)
        if again.returncode != 0 or whole(out) is not None or key_of(out) != lab.key_b:
            fig.recover_failed += 1
            state += "; recovery FAILED"
            fig.examples.append(f"{kind}:{n} {situation}: next compile rc {again.returncode} "
                                f"{again.stderr.strip()[-300:]}")
        left = leftovers(out.parent, cache / "artifacts")
        if left:
            fig.leftovers += len(left)
            state += f"; {len(left)} leftovers"
            fig.examples += left[:3]
        return state
    finally:
        shutil.rmtree(trial, ignore_errors=True)


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m edgec.testing.publish_campaigns",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="campaign", required=True)
    c = sub.add_parser("concurrency", help="concurrent compiles into one OUT, and on one cache")
    c.add_argument("--processes", type=int, default=8)
    c.add_argument("--rounds", type=int, default=50)
    c.add_argument("--mode", choices=["same-out", "shared-cache", "both"], default="both")
    c.add_argument("--fallback", action="store_true",
                   help="force the fallback protocol (EDGEC_NO_RENAMEAT2=1)")
    f = sub.add_parser("faults", help="kill edgec at every step of publishing and caching")
    f.add_argument("--limit", type=int, help="at most this many steps of each kind")
    for p in (c, f):
        p.add_argument("--workdir", help="where to work (default: a temporary folder)")
        p.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="edgec-publish-campaign-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.campaign == "concurrency":
        figures = []
        for mode, run in (("same-out", concurrency_same_out),
                          ("shared-cache", concurrency_shared_cache)):
            if args.mode not in (mode, "both"):
                continue
            (work / mode).mkdir(exist_ok=True)
            f = run(work / mode, args.processes, args.rounds, args.fallback)
            figures.append(f)
            if not args.json:
                protocol = " (fallback protocol)" if f.fallback else ""
                print(f"{f.mode}{protocol}: {f.processes} processes x {f.rounds} rounds = "
                      f"{f.compiles} "
                      f"compiles in {f.seconds} s; exit codes {f.exit_codes}; "
                      f"{f.internal_errors} internal errors, {f.other_failures} other failures; "
                      f"OUT checked {f.observations} times: {f.out_missing} missing, "
                      f"{f.out_not_whole} not whole ({f.swapped_while_read} reads of a folder "
                      f"swapped out meanwhile); {f.ends_not_whole} not whole at a round's "
                      f"end; {f.leftovers} leftovers")
                for e in f.examples[:10]:
                    print(f"  {e}")
                sys.stdout.flush()
        ok = all(f.ok for f in figures)
        if args.json:
            print(json.dumps([asdict(f) for f in figures], indent=2))
    else:
        fig = faults(work, limit=args.limit,
                     progress=lambda line: print(line, file=sys.stderr, flush=True))
        ok = fig.ok
        if args.json:
            print(json.dumps(asdict(fig), indent=2))
        else:
            print(f"{fig.trials} kill points in {fig.seconds} s: {fig.killed} killed, "
                  f"{fig.completed} ran to the end; after the kill OUT was the old artifact "
                  f"{fig.after_kill_out_old} times, the new one {fig.after_kill_out_new}, "
                  f"aside and whole (fallback protocol) {fig.after_kill_out_aside}, "
                  f"missing or broken {fig.after_kill_bad}; the next compile failed to "
                  f"recover {fig.recover_failed} times; {fig.leftovers} leftovers")
            for name, state in fig.points.items():
                print(f"  {name}: {state}")
            for e in fig.examples[:10]:
                print(f"  {e}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
