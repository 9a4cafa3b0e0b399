"""Running one case of a campaign: a forked child of a warm parent (edgec and its
dependencies already imported, so a case costs milliseconds to start), in its own
folder, under an address-space limit (``RLIMIT_AS``) and a wall-clock limit, calling
the CLI's ``main(argv)`` in-process. How the child ended decides the outcome:

- ``ok``: it returned 0, 2, 3 or 4 and said nothing of an internal error or traceback;
- ``internal``: exit 1, "internal error" or a traceback (a bug);
- ``limit``: MemoryError, or killed by a signal (the kernel, a failed allocation);
- ``hang``: it ran past the time limit.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

OK_CODES = (0, 2, 3, 4)


@dataclass
class Outcome:
    kind: str          # ok | internal | limit | hang
    code: int | None   # exit status, or None when killed
    seconds: float
    stderr: str = ""
    signal: int | None = None


@dataclass
class Tally:
    cases: int = 0
    runs: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    by_code: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str, Outcome]] = field(default_factory=list)

    def add(self, case: str, command: str, outcome: Outcome) -> None:
        self.runs += 1
        self.by_kind[outcome.kind] = self.by_kind.get(outcome.kind, 0) + 1
        key = f"{command}:{outcome.code if outcome.code is not None else 'killed'}"
        self.by_code[key] = self.by_code.get(key, 0) + 1
        if outcome.kind != "ok":
            self.failures.append((case, command, outcome))


def _child(argv: list[str], folder: str, memory: int, seconds: int) -> None:
    """Runs in the forked child; never returns."""
    code = 1
    try:
        os.chdir(folder)
        out = os.open(os.path.join(folder, "stdout.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        err = os.open(os.path.join(folder, "stderr.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, 1)
        os.dup2(err, 2)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = open(2, "w", closefd=False)
        os.environ["TMPDIR"] = folder  # crash logs land in the case's folder
        tempfile.tempdir = None
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.alarm(seconds)
        from edgec.cli import main

        code = main(argv)
        sys.stdout.flush()
        sys.stderr.flush()
    except MemoryError:
        code = 99
    except BaseException:  # noqa: BLE001 - anything escaping main is a finding
        import traceback

        try:
            traceback.print_exc()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
        code = 98
    os._exit(code if isinstance(code, int) and 0 <= code < 256 else 97)


def run_case(argv: list[str], folder: str, *, memory: int, seconds: int) -> Outcome:
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        _child(argv, folder, memory, seconds)
    _, status = os.waitpid(pid, 0)
    return classify(status, folder, time.monotonic() - start)


def classify(status: int, folder: str, seconds: float) -> Outcome:
    try:
        with open(os.path.join(folder, "stderr.txt"), errors="replace") as f:
            stderr = f.read(20000)
    except OSError:
        stderr = ""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        kind = "hang" if sig == signal.SIGALRM else "limit"
        return Outcome(kind, None, seconds, stderr, sig)
    code = os.WEXITSTATUS(status)
    if code == 99 or "MemoryError" in stderr:
        return Outcome("limit", code, seconds, stderr)
    if code not in OK_CODES or "internal error" in stderr or "Traceback" in stderr:
        return Outcome("internal", code, seconds, stderr)
    return Outcome("ok", code, seconds, stderr)


def run_cases(cases, commands: Callable[[str, str], list[tuple[str, list[str]]]], *,
              jobs: int, memory: int, seconds: int, keep: str | None,
              progress: Callable[[Tally], None] | None = None) -> Tally:
    """``cases`` yields ``(name, write)``: ``write(folder)`` puts the case's files in a
    fresh folder and returns the model's file name; ``commands(folder, model)`` gives
    ``(label, argv)`` pairs to run one after another in that folder. Up to ``jobs`` cases
    run at once. Failing cases are copied under ``keep`` (with their stderr)."""
    tally = Tally()
    running: dict[int, tuple] = {}
    root = tempfile.mkdtemp(prefix="edgec-campaign-")

    def stop(signum, frame):
        raise KeyboardInterrupt  # the children are killed and the folders removed below

    # A campaign started in the background ignores SIGINT: SIGTERM stops it cleanly.
    previous = signal.signal(signal.SIGTERM, stop)
    iterator = iter(cases)

    def start_next() -> bool:
        try:
            name, write = next(iterator)
        except StopIteration:
            return False
        folder = os.path.join(root, name)
        os.makedirs(folder)
        model = write(folder)
        tally.cases += 1
        queue = list(commands(folder, model))
        _launch(name, folder, queue)
        return True

    def _launch(name, folder, queue):
        label, argv = queue[0]
        run_dir = os.path.join(folder, f"run-{label}")
        os.makedirs(run_dir, exist_ok=True)
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            _child(argv, run_dir, memory, seconds)
        running[pid] = (name, folder, queue, label, run_dir, start)

    try:
        while True:
            while len(running) < jobs and start_next():
                pass
            if not running:
                break
            pid, status = os.wait()
            if pid not in running:
                continue
            name, folder, queue, label, run_dir, start = running.pop(pid)
            outcome = classify(status, run_dir, time.monotonic() - start)
            tally.add(name, label, outcome)
            if outcome.kind != "ok" and keep:
                dest = os.path.join(keep, f"{name}-{label}")
                shutil.rmtree(dest, ignore_errors=True)
                shutil.copytree(folder, dest, ignore=shutil.ignore_patterns("cache", "art*"),
                                dirs_exist_ok=True)
            if len(queue) > 1:
                _launch(name, folder, queue[1:])
            else:
                shutil.rmtree(folder, ignore_errors=True)
            if progress is not None:
                progress(tally)
    finally:
        for pid in list(running):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        shutil.rmtree(root, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
    return tally
