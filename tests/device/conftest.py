"""Fixtures for the emulated-device tests: an arm64 Debian root run under qemu-user.

The root is built once (1.5-2 minutes on a loaded 2-core host) and cached
(edgec.testing.device_root). Where this host cannot build it (no debootstrap,
qemu-user-static or root), the tests are skipped, unless ``EDGEC_REQUIRE`` lists
``emulator`` (CI sets it): then a missing tool is a failure, not a silent skip.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgec.backends.base import RpcConfig
from edgec.testing import device_root as dr
from edgec.testing.required import missing

REPO = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 300  # the RPC server imports TVM under qemu on a loaded 2-core host


@pytest.fixture(scope="session")
def device_root():
    """The cached arm64 root (`DeviceRoot`), with this checkout's edgec_runtime staged on
    its PYTHONPATH."""
    try:
        device = dr.build("arm64")
    except dr.Unavailable as error:
        missing("emulator", f"no emulated arm64 device: {error}")
    runtime = REPO / "edgec_runtime"
    if runtime.is_dir():
        device.stage_source(runtime)
    yield device
    device.clean_work()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _registered(port: int, key: str) -> bool:
    from tvm import rpc

    try:
        summary = rpc.connect_tracker("127.0.0.1", port).summary()
    except (OSError, RuntimeError, ValueError):
        return False
    return any(entry.get("key", "").split(":")[-1] == key
               for entry in summary.get("server_info", []))


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def emulated_rpc(device_root, tmp_path_factory):
    """An `RpcConfig` (emulated=True) for a tracker on this host with one TVM RPC server
    running inside the arm64 root under ``qemu -cpu cortex-a72``, key "rpi4-emulated"."""
    for module in ("tvm", "tornado"):
        try:
            __import__(module)
        except ImportError as error:
            why = f"the emulated RPC device needs {module} on this host: {error}"
            missing("emulator", why)
    key = "rpi4-emulated"
    port, server_port = _free_port(), _free_port()
    logs = tmp_path_factory.mktemp("emulated-rpc")
    processes: list[subprocess.Popen] = []
    try:
        with open(logs / "tracker.log", "w") as log:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                 "--port", str(port), "--port-end", str(port + 1)],
                stdout=log, stderr=subprocess.STDOUT, process_group=0))
        with open(logs / "server.log", "w") as log:
            processes.append(device_root.rpc_server(
                tracker=f"127.0.0.1:{port}", key=key, port=server_port, cpu="cortex-a72",
                stdout=log, stderr=subprocess.STDOUT, process_group=0))
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if _port_open(port) and _registered(port, key):
                break
            if any(p.poll() is not None for p in processes):
                break
            time.sleep(1)
        if not (_port_open(port) and _registered(port, key)):
            text = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}"
                             for p in sorted(logs.iterdir()))
            pytest.fail(f"the emulated RPC server did not register within "
                        f"{STARTUP_SECONDS} s\n{text}")
        yield RpcConfig("127.0.0.1", port, key, emulated=True)
    finally:
        for process in reversed(processes):
            _stop(process)
