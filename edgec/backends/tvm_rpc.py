"""Reaching a device through a TVM RPC tracker: the quick check that a tracker answers
and holds the spec's key, before tuning or measurement wait on it."""

from __future__ import annotations

from edgec.backends.base import BackendError


def check_rpc_tracker(config, timeout: float = 10.0) -> None:
    """Raises a one-line `BackendError` (exit 2) unless ``config`` names a reachable TVM
    RPC tracker with a device server registered under its key.

    TVM's own client retries a refused connection for 60 s, logging a warning every 5 s,
    and then fails deep inside tuning or measurement; this answers in ``timeout`` s.
    """
    import socket

    where = f"{config.host}:{config.port}"
    try:
        with socket.create_connection((config.host, config.port), timeout=timeout):
            pass
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise BackendError(f"cannot reach the RPC tracker {where}: {reason}",
                           exit_code=2) from None
    try:
        from tvm import rpc
    except ImportError as error:
        raise BackendError(f"TVM RPC needs apache-tvm (pip install apache-tvm): {error}",
                           exit_code=2) from None
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # TVM's tracker client blocks on a silent peer
    try:
        tracker = rpc.connect_tracker(config.host, config.port)
        try:
            summary = tracker.summary()
        finally:
            tracker.close()
    except Exception as error:  # RuntimeError "not RPC Tracker", timeouts, bad JSON
        reason = " ".join(str(error).split()) or type(error).__name__
        raise BackendError(f"{where} does not answer as a TVM RPC tracker: {reason}",
                           exit_code=2) from None
    finally:
        socket.setdefaulttimeout(previous)
    keys = sorted({str(entry.get("key", "")).split(":")[-1]
                   for entry in summary.get("server_info", [])} - {""})
    if config.key not in keys:
        raise BackendError(f"no device server is registered under key '{config.key}' at the "
                           f"RPC tracker {where} (keys there: {', '.join(keys) or 'none'})",
                           exit_code=2)

