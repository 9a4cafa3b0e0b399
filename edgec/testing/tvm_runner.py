"""Runs conformance cases through TVM (relax ONNX import, build for llvm, run on this host).

Each case goes to a worker process: TVM can crash (a segfault in the importer or in
LLVM) or hang on a case, and one bad case must not end a sweep of 1,869. The worker
is started once and reused; a crash or a timeout is that case's result ("tvm crash",
"tvm timeout") and the next case gets a fresh worker.

    worker = TVMWorker()
    outputs_per_data_set = worker.run(model_proto, [inputs for each data set])  # or TVMCaseError
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any, Sequence

import numpy as np

# Seconds one case may take (import + build + run) before it is called a timeout. On a
# loaded 2-core machine the largest node cases take about a minute to build.
DEFAULT_TIMEOUT = 300.0


class TVMCaseError(Exception):
    """TVM could not import, build or run a case: ``stage`` is import, build, run,
    crash or timeout; the message is the error's first line."""

    def __init__(self, stage: str, message: str):
        super().__init__(f"tvm {stage}: {message}")
        self.stage = stage
        self.message = message


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split("\n")[0].split()) if str(e).strip() else ""
    if not text:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        text = lines[0] if lines else ""
    # TVM's C++ errors put the message after the traceback; keep their last line.
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if lines and lines[0].startswith("Traceback"):
        text = lines[-1]
    return f"{type(e).__name__}: {text[:300]}" if text else type(e).__name__


def _to_numpy(value: Any) -> Any:
    import tvm

    if hasattr(value, "numpy"):
        return value.numpy()
    if isinstance(value, (tvm.runtime.ShapeTuple,)):
        return np.array(list(value), dtype=np.int64)
    if isinstance(value, (list, tuple)) or type(value).__name__ in ("Array", "List"):
        return [_to_numpy(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return np.array(value)
    if isinstance(value, int):
        return np.array(value, dtype=np.int64)
    if isinstance(value, float):
        return np.array(value, dtype=np.float32)
    return value


def compile_and_run(model_bytes: bytes, feeds: Sequence[Sequence[Any]], refuse: bool = True
                    ) -> list[list[Any]]:
    """Import ``model_bytes`` into relax, build for llvm, and run it once per feed; with
    ``refuse``, first refuse what the tvm backend refuses (``tvm_legality.miscompiled``).

    Raises TVMCaseError naming the stage that failed."""
    import contextlib
    import io
    import warnings

    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend import onnx as relax_onnx

    model = onnx.load_from_string(model_bytes)
    from edgec.backends.tvm_legality import miscompiled

    refused = miscompiled(model) if refuse else []
    if refused:
        node, why = refused[0]
        raise TVMCaseError("refused", f"{node.op_type}: {why}")
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            mod = relax_onnx.from_onnx(model, keep_params_in_input=False)
        except Exception as e:  # the importer raises every kind of exception
            from edgec.backends.tvm import failing_node

            node = failing_node(e, model)
            where = f"{node.op_type}: " if node is not None else ""
            raise TVMCaseError("import", where + _first_line(e)) from None
    try:
        mod = relax.transform.DecomposeOpsForInference()(mod)
        mod = relax.get_pipeline("zero")(mod)
        executable = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
        vm = relax.VirtualMachine(executable, tvm.cpu())
    except Exception as e:
        raise TVMCaseError("build", _first_line(e)) from None
    results = []
    for inputs in feeds:
        try:
            args = []
            for x in inputs:
                if not isinstance(x, np.ndarray):
                    raise TypeError(f"input of kind {type(x).__name__}: only tensors are fed to TVM")
                # Not np.ascontiguousarray: it makes a 0-d array 1-d.
                args.append(tvm.runtime.tensor(x if x.flags.c_contiguous else x.copy(), tvm.cpu()))
            out = vm["main"](*args)
        except Exception as e:
            raise TVMCaseError("run", _first_line(e)) from None
        # A model with one output returns it bare; several come back as a tuple.
        if len(model.graph.output) == 1:
            results.append([_to_numpy(out)])
        else:
            results.append(list(_to_numpy(out)))
    return results


def _serve(connection) -> None:
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    while True:
        try:
            request = connection.recv()
        except EOFError:
            return
        if request is None:
            return
        model_bytes, feeds, refuse = request
        try:
            connection.send(("ok", compile_and_run(model_bytes, feeds, refuse)))
        except TVMCaseError as e:
            connection.send(("error", (e.stage, e.message)))
        except Exception as e:  # a bug here, or TVM raising outside the stages
            connection.send(("error", ("run", _first_line(e))))


class TVMWorker:
    """A worker process that compiles and runs cases; restarted after a crash or a timeout."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT):
        self.timeout = timeout
        self._process = None
        self._connection = None

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child,), daemon=True)
        self._process.start()
        child.close()
        self._connection = parent

    def stop(self) -> None:
        if self._process is None or self._connection is None:
            self._kill()
            return
        try:
            self._connection.send(None)
        except (OSError, BrokenPipeError):
            pass
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._process = self._connection = None

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join()
        self._process = self._connection = None

    def run(self, model_bytes: bytes, feeds: Sequence[Sequence[Any]], refuse: bool = True
            ) -> list[list[Any]]:
        if self._process is None or not self._process.is_alive():
            self._start()
        try:
            self._connection.send((model_bytes, [list(f) for f in feeds], refuse))
        except (OSError, BrokenPipeError) as e:
            self._kill()
            raise TVMCaseError("crash", f"the worker went away ({e})") from None
        # The first case of a fresh worker also pays TVM's import.
        if not self._connection.poll(self.timeout):
            self._kill()
            raise TVMCaseError("timeout", f"no result within {self.timeout:g} s")
        try:
            status, payload = self._connection.recv()
        except (EOFError, OSError):
            code = self._process.exitcode if self._process is not None else None
            self._process.join(5) if self._process is not None else None
            code = self._process.exitcode if self._process is not None else code
            self._kill()
            raise TVMCaseError("crash", f"the TVM worker died (exit code {code})") from None
        if status == "ok":
            return payload
        stage, message = payload
        raise TVMCaseError(stage, message)

    def __enter__(self) -> "TVMWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
