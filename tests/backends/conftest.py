"""Fixtures for backend tests: a TVM RPC tracker with one loopback server behind it, and
legalize-tvm registered for the tests that compile through the tvm backend."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from edgec.backends.base import RpcConfig
from edgec.testing.required import import_or_missing

@pytest.fixture
def legalize_tvm_registered():
    """legalize-tvm in the process's registry even where the installed metadata predates
    it (an editable install not reinstalled since)."""
    from edgec.passes import legalize_tvm
    from edgec.passmgr import default_registry

    registry = default_registry()
    cls = legalize_tvm.LegalizeTVM
    added = cls.name not in registry.names()
    if added:
        registry.register(cls)
    yield
    if added:
        registry._entries.pop(cls.name, None)


RPC_KEY = "local"
STARTUP_SECONDS = 90  # both processes import TVM; a loaded 2-core machine is slow at it


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_registered(port: int, key: str) -> bool:
    from tvm import rpc

    try:
        summary = rpc.connect_tracker("127.0.0.1", port).summary()
    except (OSError, RuntimeError, ValueError):
        return False
    return any(entry.get("key", "").split(":")[-1] == key
               for entry in summary.get("server_info", []))


def _stop(process: subprocess.Popen) -> None:
    # Each was started in its own process group: the group is it and its workers only.
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def rpc_tracker(tmp_path_factory):
    """An `RpcConfig` for a tracker on 127.0.0.1 with one CPU server registered under
    the key "local"; both are stopped at the end of the session."""
    import_or_missing("tvm")
    import_or_missing("tornado", reason="TVM's RPC tracker needs tornado (pip install tornado)")
    port, server_port = _free_port(), _free_port()
    logs = tmp_path_factory.mktemp("rpc")
    commands = {
        "tracker": [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                    "--port", str(port), "--port-end", str(port + 1)],
        "server": [sys.executable, "-m", "tvm.exec.rpc_server", f"--tracker=127.0.0.1:{port}",
                   f"--key={RPC_KEY}", "--host", "127.0.0.1", "--port", str(server_port),
                   "--port-end", str(server_port + 1)],
    }
    processes: list[subprocess.Popen] = []
    try:
        for name, command in commands.items():
            with open(logs / f"{name}.log", "w") as log:
                # Its own process group, but the same session: Linux schedules sessions
                # as groups (autogroup), and a server in a session of its own gets a
                # fairer share of a loaded machine than the test process measuring
                # beside it, which skews host-vs-RPC comparisons (2x seen here).
                processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                  process_group=0))
            if name == "tracker":
                _wait_for(lambda: _port_open(port), f"the RPC tracker on port {port}",
                          processes, logs)
        _wait_for(lambda: _server_registered(port, RPC_KEY),
                  f"an RPC server with key '{RPC_KEY}'", processes, logs)
        yield RpcConfig("127.0.0.1", port, RPC_KEY)
    finally:
        for process in reversed(processes):
            _stop(process)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_for(ready, what: str, processes, logs) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if ready():
            return
        if any(process.poll() is not None for process in processes):
            break
        time.sleep(0.5)
    text = "\n".join(f"--- {path.name}\n{path.read_text()[-2000:]}"
                     for path in sorted(logs.iterdir()))
    pytest.fail(f"{what} did not come up within {STARTUP_SECONDS} s\n{text}")
