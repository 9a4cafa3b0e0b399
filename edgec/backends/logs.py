"""Where a backend's own console output goes while edgec builds: to a log file.

TVM prints from C++ straight to the process's stderr (a BERT build printed "Fast mode
segfaults when there are out-of-bounds indices" eight times) and MetaSchedule logs
"[INFO] Logging directory: ..." through a console handler on stdout; neither is edgec's
to show. While `backend_output_to(path)` is active, file descriptors 1 and 2 — and with
them the C++ logs, MetaSchedule's console handler and any worker process started then —
go to ``path``, and Python's ``sys.stderr`` writes to the real stderr, so edgec's own
progress lines still reach the terminal.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys


@contextlib.contextmanager
def backend_output_to(path: str):
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        yield  # nowhere to put it: leave the output where it was
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    real_stderr = sys.stderr
    terminal = io.TextIOWrapper(os.fdopen(os.dup(saved[2]), "wb", buffering=0),
                                encoding=getattr(real_stderr, "encoding", None) or "utf-8",
                                errors="backslashreplace", line_buffering=True)
    try:
        for fd in (1, 2):
            os.dup2(log, fd)
        sys.stderr = terminal
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        sys.stderr = real_stderr
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(log)
        terminal.close()
        _drop_console_handlers("tvm")


def _drop_console_handlers(prefix: str) -> None:
    """MetaSchedule adds a console handler each time it tunes: keep it off the terminal
    after the build, too."""
    for name in list(logging.root.manager.loggerDict):
        if name == prefix or name.startswith(prefix + "."):
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                if type(handler) is logging.StreamHandler:
                    logger.removeHandler(handler)
