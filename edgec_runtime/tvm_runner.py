"""Running a TVM artifact: the module ``.so`` in a relax VM, with TVM's runtime alone.

Nothing of TVM's Python compiler is imported (``import tvm`` loads the whole compiler,
relax and its frontends): ``tvm_ffi`` loads ``libtvm_runtime.so`` and the module, and the
VM is driven through the functions the executable exports (``vm_load_executable``,
``vm_initialization``), as `tvm.runtime.vm.VirtualMachine` does.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any, Mapping

import numpy as np

from edgec_runtime.errors import InputError, ModelLoadError, RuntimeFailure
from edgec_runtime.feeds import InputInfo
from edgec_runtime.host import tvm_runtime_library

_KDL = {"cpu": 1, "cuda": 2}
# TVM's kernels assume 64-byte aligned buffers (its allocator's kAllocAlignment): an
# input numpy happened to place at a 16-byte boundary crashes an AVX-512 aligned load.
_ALIGNMENT = 64
_POOLED_ALLOCATOR = 2


@functools.lru_cache(maxsize=1)
def _runtime():
    library = tvm_runtime_library()
    if library is None:
        raise RuntimeFailure("TVM's runtime is not installed here (tvm_ffi and "
                             "libtvm_runtime.so); pip install 'edgec-runtime[tvm]'")
    import tvm_ffi

    ctypes.CDLL(library, ctypes.RTLD_GLOBAL)
    return tvm_ffi


def runtime_enabled(kind: str) -> bool:
    tvm_ffi = _runtime()
    enabled = tvm_ffi.get_global_func("runtime.RuntimeEnabled", allow_missing=True)
    if enabled is not None:
        try:
            return bool(enabled(kind))
        except Exception:
            pass
    return tvm_ffi.get_global_func(f"device_api.{kind}", allow_missing=True) is not None


def set_threads(threads: int | None) -> None:
    import os

    tvm_ffi = _runtime()
    count = threads or len(os.sched_getaffinity(0))
    os.environ["TVM_NUM_THREADS"] = str(count)
    configure = tvm_ffi.get_global_func("runtime.config_threadpool", allow_missing=True)
    if configure is not None:
        mask = os.sched_getaffinity(0)
        configure(1, count)
        os.sched_setaffinity(0, mask)


def value_infos(values: Any, what: str, where: str | None) -> list[InputInfo]:
    """The module's inputs or outputs (``what``) as the manifest's TVM details record
    them, checked: a damaged record is an `ArtifactError` naming ``where``."""
    from edgec_runtime.errors import ArtifactError

    def bad(why: str) -> ArtifactError:
        return ArtifactError(f"manifest.json's TVM {what} are damaged: {why}", where)

    if not isinstance(values, list):
        raise bad("not a list")
    out = []
    for value in values:
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise bad(f"{value!r} has no name")
        try:
            dtype = np.dtype(value.get("dtype") or "float32")
        except TypeError:
            raise bad(f"dtype {value.get('dtype')!r} is unknown") from None
        if dtype.kind not in "biuf":
            raise bad(f"dtype {dtype} is not numeric")
        shape = value.get("shape")
        shape = [] if shape is None else shape
        if not isinstance(shape, list) or not all(
                d is None or isinstance(d, str) or (type(d) is int and d >= 0) for d in shape):
            raise bad(f"shape {shape!r} is not a shape")
        out.append(InputInfo(value["name"], dtype, tuple(shape)))
    return out


class TVMRunner:
    backend = "tvm"

    def __init__(self, module_path: str, details: dict, where: str | None = None):
        self.where = where
        # A module tuned on a symbolic batch was bound to this one batch (edgec's TVM
        # backend: MetaSchedule tunes static shapes only).
        self.batch = details.get("batch") if type(details.get("batch")) is int else None
        self.inputs = value_infos(details.get("inputs"), "inputs", where)
        self.outputs = value_infos(details.get("outputs"), "outputs", where)
        self.input_names = [i.name for i in self.inputs]
        self.output_names = [o.name for o in self.outputs]
        accelerator = details.get("accelerator")
        self.kind = "cuda" if isinstance(accelerator, dict) and \
            accelerator.get("kind") == "cuda" else "cpu"
        tvm_ffi = _runtime()
        self._tvm = None
        try:
            if self.kind == "cuda":
                # A CUDA module needs a TVM built with CUDA on the device (the pip wheels
                # have none), so its Python runtime is there: use its VM and device copies.
                import tvm

                self._tvm = tvm
                self._device = tvm.cuda(0)
                self.vm = tvm.runtime.vm.VirtualMachine(tvm.runtime.load_module(module_path),
                                                        self._device)
            else:
                library = tvm_ffi.load_module(module_path)
                self.vm = library["vm_load_executable"]()
                self.vm["vm_initialization"](_KDL["cpu"], 0, _POOLED_ALLOCATOR)
                self._device = None
            self._main = self.vm["main"]
        except Exception as e:  # tvm_ffi raises its own error types from C++
            text = " ".join(str(e).split())[:300] or type(e).__name__
            raise ModelLoadError(f"{module_path.rsplit('/', 1)[-1]} is not a TVM module this "
                                 f"runtime can load: {text}", where) from None

    def _arguments(self, inputs: Mapping[str, np.ndarray]) -> list:
        import tvm_ffi

        args = []
        for info in self.inputs:
            # Not np.ascontiguousarray: it makes a 0-d (scalar) input 1-d.
            array = np.asarray(inputs[info.name], order="C")
            if array.dtype != info.dtype:
                raise InputError(f"input '{info.name}' is {array.dtype}; the module takes "
                                 f"{info.dtype}", self.where)
            if array.ndim != len(info.shape) or any(
                    isinstance(w, int) and w != h for h, w in zip(array.shape, info.shape)):
                bound = "" if self.batch is None else (
                    f" (it was tuned for batch {self.batch} and takes batch {self.batch} only: "
                    "feed batches of that size, or compile with the spec's `at batch` set to "
                    "the batch you run, or without tuning for a module that takes any batch)")
                raise InputError(f"input '{info.name}' has shape {list(array.shape)}; the module "
                                 f"takes {list(info.shape)}{bound}", self.where)
            if self._tvm is not None:  # CUDA: copied to the GPU by TVM's runtime
                args.append(self._tvm.runtime.tensor(array, self._device))
                continue
            args.append(tvm_ffi.from_dlpack(_aligned(array), require_alignment=_ALIGNMENT,
                                            require_contiguous=True))
        return args

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            result = self._main(*self._arguments(inputs))
        except RuntimeFailure:
            raise
        except Exception as e:
            text = " ".join(str(e).split())[:300] or type(e).__name__
            raise InputError(f"the TVM module refused the inputs: {text}", self.where) from None
        values = [result] if hasattr(result, "__dlpack__") else list(result)
        return {name: _to_numpy(value) for name, value in zip(self.output_names, values)}

    def bench_times(self, feed: Mapping[str, np.ndarray]) -> list[float] | None:
        """Seconds per call of ``main`` timed by the VM's own evaluator (as the compiler
        and `edgec bench --rpc-tracker` time it), or None if this runtime lacks it."""
        import struct

        if self._tvm is not None:
            vm = self.vm
            vm.set_input("main", *self._arguments(feed))
            vm.time_evaluator("invoke_stateful", self._device, number=1, repeat=5)("main")
            times = list(vm.time_evaluator("invoke_stateful", self._device, number=1,
                                           repeat=50, min_repeat_ms=0)("main").results)
            return times
        tvm_ffi = _runtime()
        evaluator = tvm_ffi.get_global_func("runtime.RPCTimeEvaluator", allow_missing=True)
        if evaluator is None:
            return None
        self.vm["set_input"]("main", *self._arguments(feed))
        device = _KDL[self.kind]

        def timed(repeat: int) -> list[float]:
            feval = evaluator(self.vm, "invoke_stateful", device, 0, 1, repeat, 0, 100, 0, 1,
                              0, "")
            blob = bytes(feval("main"))
            return list(struct.unpack("@" + "d" * repeat, blob))

        # Warm-up, then at most about 10 s of timed runs (at least 5), as time_calls
        # takes: 50 runs of an untuned ResNet-18 (1.5 s each) took minutes per candidate.
        [first] = timed(1)
        if first * 4 < 1.0:
            timed(4)
        times = timed(max(5, min(50, int(10.0 / max(first, 1e-9)))))
        if sum(times) < 0.5:  # fast models: more samples
            times += timed(200)
        return times

    def timed_call(self, feed: Mapping[str, np.ndarray]):
        args = self._arguments(feed)
        main = self._main
        return lambda: main(*args)


def _aligned(array: np.ndarray) -> np.ndarray:
    """``array`` itself if its data is 64-byte aligned and C-contiguous, else a copy that is."""
    if array.flags.c_contiguous and array.ctypes.data % _ALIGNMENT == 0:
        return array
    raw = np.empty(array.nbytes + _ALIGNMENT, dtype=np.uint8)
    offset = (-raw.ctypes.data) % _ALIGNMENT
    out = raw[offset:offset + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "numpy"):  # tvm.runtime.Tensor (CUDA): copied to the host by TVM
        return value.numpy()
    try:
        return np.from_dlpack(value).copy()
    except (TypeError, RuntimeError, BufferError) as e:
        raise RuntimeFailure(f"cannot copy a TVM output to the host: {e}") from None


def cuda_device_exists() -> bool:
    """Whether the TVM runtime sees a CUDA GPU (device attribute 0: exists)."""
    get = _runtime().get_global_func("runtime.GetDeviceAttr", allow_missing=True)
    try:
        return bool(get(_KDL["cuda"], 0, 0)) if get is not None else False
    except Exception:
        return False
