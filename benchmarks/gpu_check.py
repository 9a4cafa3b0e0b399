"""edgec's CUDA path on a real GPU without TVM's CUDA runtime: TVM-generated kernels, built
here, run there through the CUDA driver API.

The machine with the GPU has torch, nvcc, onnx and a CPU-only onnxruntime, but no TVM (the
apache-tvm wheel has no CUDA runtime) and no network. So the work is split:

    python benchmarks/gpu_check.py prepare            # here: needs apache-tvm and nvcc
    python benchmarks/gpu_check.py device --out DIR   # there: needs only numpy + libcuda

``prepare`` builds small ONNX models, one per kernel class of the benchmark models (a
ResNet-18 3x3 convolution, a MobileNetV2 depthwise convolution, the transformer's FFN
GEMM, the digits model's first convolution), imports each with TVM's relax importer as
edgec's TVM backend does, fuses it (`zero` pipeline), schedules the fused function with
TVM's default GPU rules (dlight, untuned: what an untuned edgec CUDA artifact holds),
compiles it for sm_90 (H200), and writes into benchmarks/gpu_inputs/ (gitignored) per
case: the CUDA C source, the cubin nvcc made of it here, the launch geometry and
parameter order, the parameters and onnxruntime's CPU output as the reference, and
edgec's cost-model estimate for that node on an H200.

``device`` loads each cubin with the CUDA driver (ctypes, libcuda.so.1), launches the
kernel, compares with the reference, times it with CUDA events; recompiles the source
with the device's own nvcc and checks that cubin too; times torch's own kernel for the
same op when torch is there. Every step is in try/except; results go to
DIR/gpu_check.json (rewritten after each step), so a timeout still leaves what was done.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
INPUTS = os.path.join(HERE, "gpu_inputs")
ARCH = "sm_90"


# --------------------------------------------------------------------------- cases


def _cases():
    """(name, what, (onnx model, the op for torch)) for each kernel class."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def model(name, nodes, inits, x_shape, y_shape):
        graph = helper.make_graph(
            nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
            [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        proto.ir_version = 8
        onnx.checker.check_model(proto)
        return proto

    def conv(name, cin, cout, hw, k, group=1):
        w = rng.normal(0, (2.0 / (cin // group * k * k)) ** 0.5, (cout, cin // group, k, k))
        b = rng.normal(0, 0.1, cout)
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[k // 2] * 4, group=group)
        torch_op = {"op": "conv2d", "x": [1, cin, hw, hw], "w": list(w.shape), "pad": k // 2,
                    "groups": group}
        return model(name, [node], {"w": w, "b": b}, [1, cin, hw, hw], [1, cout, hw, hw]), torch_op

    def gemm(name, m, k, n):
        w = rng.normal(0, k ** -0.5, (k, n))
        b = rng.normal(0, 0.1, n)
        nodes = [helper.make_node("MatMul", ["x", "w"], ["t"]),
                 helper.make_node("Add", ["t", "b"], ["y"])]
        torch_op = {"op": "matmul", "a": [m, k], "b": [k, n]}
        return model(name, nodes, {"w": w, "b": b}, [1, m, k], [1, m, n]), torch_op

    return [
        ("conv3x3_64_56", "ResNet-18 layer1 conv: 64->64, 3x3, 56x56, + bias", conv("c", 64, 64, 56, 3)),
        ("dwconv3x3_96_56", "MobileNetV2 depthwise conv: 96 ch, 3x3, 56x56, + bias",
         conv("d", 96, 96, 56, 3, group=96)),
        ("gemm_128x256x1024", "transformer FFN up-projection: [128,256]x[256,1024] + bias",
         gemm("g", 128, 256, 1024)),
        ("conv3x3_1_8_28", "digits-sized conv: 1->8, 3x3, 28x28, + bias", conv("s", 1, 8, 28, 3)),
    ]


# --------------------------------------------------------------------------- prepare (here)


def _fused_call(mod):
    """(global var, args) of the call_tir in main that runs a fused conv/matmul function."""
    from tvm import relax

    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.call_tir":
                gvar = value.args[0]
                if any(k in gvar.name_hint for k in ("conv", "matmul")):
                    return gvar, list(value.args[1].fields)
    raise RuntimeError("no fused conv/matmul call in main")


def _prepare_case(name, what, proto, target_json, out_dir, cost_target):
    import onnxruntime as ort
    import tvm
    import tvm.s_tir.dlight as dl
    from tvm import relax
    from tvm.relax.frontend import onnx as relax_onnx

    record = {"name": name, "what": what}
    mod = relax_onnx.from_onnx(proto, keep_params_in_input=False)
    mod = relax.transform.DecomposeOpsForInference()(mod)
    mod = relax.get_pipeline("zero")(mod)
    gvar, args = _fused_call(mod)
    prim = mod[gvar].with_attr("global_symbol", "main")
    target = tvm.target.Target(target_json)
    with target:
        scheduled = dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                            dl.gpu.GeneralReduction(),
                                            dl.gpu.Fallback())(tvm.IRModule({"main": prim}))
    text = scheduled["main"].script()
    geometry = {}
    for extent, tag in re.findall(
            r'thread_binding\((?:T\.int64\()?(\d+)\)?, thread="((?:blockIdx|threadIdx)\.[xyz])"', text):
        geometry[tag] = max(geometry.get(tag, 1), int(extent))
    record["grid"] = [geometry.get(f"blockIdx.{a}", 1) for a in "xyz"]
    record["block"] = [geometry.get(f"threadIdx.{a}", 1) for a in "xyz"]
    executable = tvm.compile(scheduled, target=target)
    cuda = _find_module(executable.mod if hasattr(executable, "mod") else executable, "cuda")
    source = cuda.inspect_source()
    kernels = re.findall(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(([^)]*)\)\s*\{',
                         source)
    if len(kernels) != 1:
        raise RuntimeError(f"expected one kernel, TVM wrote {len(kernels)}")
    kernel, signature = kernels[0]
    record["kernel"] = kernel
    # Kernel parameters are the buffers' data pointers, named <buffer>_ptr.
    params = [p.strip().split()[-1] for p in signature.split(",")]
    buffers = {}
    for buffer in prim.params:   # TVM 0.27: a PrimFunc's params are its buffers
        buffers[buffer.name] = ([int(d) for d in buffer.shape], str(buffer.dtype))
    arrays = {}
    x = np.random.default_rng(1).normal(0, 1, [d.dim_value for d in
                                               proto.graph.input[0].type.tensor_type.shape.dim]
                                        ).astype(np.float32)
    inputs_in_order = []
    for arg in args:
        # TVM 0.27: a bound constant holds its tensor in .value; the model input is a Var.
        value = getattr(arg, "value", None)
        inputs_in_order.append(x if value is None else value.numpy())
    names = [buffer.name for buffer in prim.params]
    for buffer_name, value in zip(names, inputs_in_order):
        arrays[buffer_name] = np.ascontiguousarray(value)
    output_names = names[len(inputs_in_order):]
    if len(output_names) != 1:
        raise RuntimeError(f"expected one output buffer, got {output_names}")
    record["output"] = output_names[0]
    record["params"] = []
    for p in params:
        buffer_name = p[:-4] if p.endswith("_ptr") else p
        shape, dtype = buffers[buffer_name]
        record["params"].append({"buffer": buffer_name, "shape": shape, "dtype": dtype})
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = session.run(None, {"x": x})[0]
    out_shape = buffers[output_names[0]][0]
    arrays["__reference__"] = reference.reshape(out_shape)
    # The same fused function built for this CPU, fed the same arrays: checks that the
    # parameters and the reference belong together before a GPU ever sees them.
    cpu = tvm.compile(tvm.IRModule({"main": prim}), target="llvm")
    out = tvm.runtime.tensor(np.zeros(out_shape, np.float32))
    cpu["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in inputs_in_order], out)
    record["cpu_build_max_abs_error"] = float(np.max(np.abs(out.numpy() - arrays["__reference__"])))
    case_dir = os.path.join(out_dir, name)
    os.makedirs(case_dir, exist_ok=True)
    np.savez(os.path.join(case_dir, "arrays.npz"), **arrays)
    with open(os.path.join(case_dir, "kernel.cu"), "w") as f:
        f.write(source)
    from tvm.support import nvcc
    start = time.time()
    with tvm.target.Target({"kind": "cuda", "arch": ARCH}):
        cubin = nvcc.compile_cuda(source, target_format="cubin", arch=ARCH, compiler="nvcc")
    record["host_nvcc_s"] = round(time.time() - start, 2)
    with open(os.path.join(case_dir, f"kernel.{ARCH}.cubin"), "wb") as f:
        f.write(bytes(cubin))
    record["cost_model_us"] = _node_estimate_us(proto, cost_target)
    with open(os.path.join(case_dir, "case.json"), "w") as f:
        json.dump(record, f, indent=1)
    return record


REPO = os.path.dirname(HERE)
DIGITS = os.path.join(REPO, "spec_examples", "digits.onnx")
DIGITS_DATA = os.path.join(REPO, "spec_examples", "data", "digits.npz")


def _prepare_ort_artifact(out_dir: str) -> dict:
    """A Jetson (CUDA target) onnxruntime artifact of the digits model, fp16."""
    import edgec

    spec = os.path.join(out_dir, "jetson-ort.edge")
    with open(spec, "w") as f:
        f.write('target jetson-orin-nano\nbudget { latency < 15 ms }\n'
                f'accuracy {{ data "{DIGITS_DATA}" }}\n'
                'optimize { precision fp16; backend ort }\n')
    with tempfile.TemporaryDirectory() as cache:
        edgec.compile(DIGITS, spec, out=os.path.join(out_dir, "ort_jetson"), cache_dir=cache)
    with open(os.path.join(out_dir, "ort_jetson", "session.json")) as f:
        return {"folder": "ort_jetson", "providers": json.load(f)["providers"]}


def _node_estimate_us(proto, target) -> float:
    """edgec's GPU estimate for the model's one compute node, launch cost included."""
    from edgec.frontend import import_model
    from edgec.planner.costmodel import estimate

    return round(estimate(import_model(proto), target).seconds * 1e6, 2)


def _find_module(module, kind):
    if module.kind == kind:
        return module
    for imported in module.imports:
        found = _find_module(imported, kind)
        if found is not None:
            return found
    return None


def prepare(out_dir: str) -> int:
    sys.path.insert(0, os.path.dirname(HERE))
    sys.path.insert(0, HERE)
    from gpu_estimates import h200_target

    from edgec.backends.tvm import tvm_target_json

    target = h200_target()
    target_json = tvm_target_json(target)
    target_json.pop("host", None)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    summary = {"arch": ARCH, "tvm_target": target_json, "cases": []}
    for name, what, (proto, torch_op) in _cases():
        try:
            record = _prepare_case(name, what, proto, target_json, out_dir, target)
            record["torch"] = torch_op
            with open(os.path.join(out_dir, name, "case.json"), "w") as f:
                json.dump(record, f, indent=1)
            summary["cases"].append(record)
            print(f"{name}: ok")
        except Exception as error:  # record and go on: the device runs what is there
            summary["cases"].append({"name": name, "error": f"{type(error).__name__}: {error}"})
            print(f"{name}: {type(error).__name__}: {error}")
    try:
        summary["ort_artifact"] = _prepare_ort_artifact(out_dir)
        print("ort_jetson: ok")
    except Exception as error:
        summary["ort_artifact"] = {"error": f"{type(error).__name__}: {error}"}
        print(f"ort_jetson: {type(error).__name__}: {error}")
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump(summary, f, indent=1)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out_dir) for f in fs)
    print(f"wrote {out_dir} ({total / 1e6:.1f} MB)")
    return 0


# --------------------------------------------------------------------------- device (there)


class Cuda:
    """The few CUDA driver API calls the check needs, through ctypes."""

    def __init__(self):
        self.lib = ctypes.CDLL("libcuda.so.1")
        self._check(self.lib.cuInit(0), "cuInit")
        device = ctypes.c_int()
        self._check(self.lib.cuDeviceGet(ctypes.byref(device), 0), "cuDeviceGet")
        self.context = ctypes.c_void_p()
        self._check(self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(self.context), device),
                    "cuDevicePrimaryCtxRetain")
        self._check(self.lib.cuCtxSetCurrent(self.context), "cuCtxSetCurrent")
        name = ctypes.create_string_buffer(256)
        self.lib.cuDeviceGetName(name, 256, device)
        self.name = name.value.decode()
        self.lib.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
        self.lib.cuMemcpyHtoD_v2.argtypes = [ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t]
        self.lib.cuMemcpyDtoH_v2.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t]
        self.lib.cuMemFree_v2.argtypes = [ctypes.c_uint64]
        self.lib.cuLaunchKernel.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 7 + [
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self.lib.cuEventElapsedTime.argtypes = [ctypes.POINTER(ctypes.c_float), ctypes.c_void_p,
                                                ctypes.c_void_p]

    def _check(self, status, what):
        if status != 0:
            text = ctypes.c_char_p()
            try:
                self.lib.cuGetErrorString(status, ctypes.byref(text))
            except Exception:
                pass
            raise RuntimeError(f"{what} failed: {status} {text.value.decode() if text.value else ''}")

    def function(self, cubin: bytes, name: str):
        module = ctypes.c_void_p()
        self._check(self.lib.cuModuleLoadData(ctypes.byref(module), cubin), "cuModuleLoadData")
        function = ctypes.c_void_p()
        self._check(self.lib.cuModuleGetFunction(ctypes.byref(function), module, name.encode()),
                    "cuModuleGetFunction")
        return function

    def to_device(self, array: np.ndarray) -> ctypes.c_uint64:
        pointer = ctypes.c_uint64()
        self._check(self.lib.cuMemAlloc_v2(ctypes.byref(pointer), max(array.nbytes, 4)),
                    "cuMemAlloc")
        self._check(self.lib.cuMemcpyHtoD_v2(pointer.value, array.ctypes.data, array.nbytes),
                    "cuMemcpyHtoD")
        return pointer

    def to_host(self, pointer, array: np.ndarray) -> np.ndarray:
        self._check(self.lib.cuMemcpyDtoH_v2(array.ctypes.data, pointer.value, array.nbytes),
                    "cuMemcpyDtoH")
        return array

    def launch(self, function, grid, block, pointers):
        values = [ctypes.c_uint64(p.value) for p in pointers]
        args = (ctypes.c_void_p * len(values))(*[ctypes.cast(ctypes.byref(v), ctypes.c_void_p)
                                                 for v in values])
        self._check(self.lib.cuLaunchKernel(function, *grid, *block, 0, None,
                                            ctypes.cast(args, ctypes.c_void_p), None),
                    "cuLaunchKernel")

    def sync(self):
        self._check(self.lib.cuCtxSynchronize(), "cuCtxSynchronize")

    def time_us(self, fn, repeats=200) -> float:
        start, stop = ctypes.c_void_p(), ctypes.c_void_p()
        self._check(self.lib.cuEventCreate(ctypes.byref(start), 0), "cuEventCreate")
        self._check(self.lib.cuEventCreate(ctypes.byref(stop), 0), "cuEventCreate")
        rounds = []
        for _ in range(5):
            self._check(self.lib.cuEventRecord(start, None), "cuEventRecord")
            for _ in range(repeats):
                fn()
            self._check(self.lib.cuEventRecord(stop, None), "cuEventRecord")
            self._check(self.lib.cuEventSynchronize(stop), "cuEventSynchronize")
            ms = ctypes.c_float()
            self._check(self.lib.cuEventElapsedTime(ctypes.byref(ms), start, stop),
                        "cuEventElapsedTime")
            rounds.append(ms.value * 1e3 / repeats)
        return float(np.median(rounds))


def _run_cubin(cuda, cubin, case, arrays):
    function = cuda.function(cubin, case["kernel"])
    output_shape = next(p["shape"] for p in case["params"] if p["buffer"] == case["output"])
    pointers, output_pointer = [], None
    for p in case["params"]:
        if p["buffer"] == case["output"]:
            output_pointer = cuda.to_device(np.zeros(output_shape, np.float32))
            pointers.append(output_pointer)
        else:
            pointers.append(cuda.to_device(np.ascontiguousarray(arrays[p["buffer"]])))
    cuda.launch(function, case["grid"], case["block"], pointers)
    cuda.sync()
    got = cuda.to_host(output_pointer, np.zeros(output_shape, np.float32))
    want = arrays["__reference__"]
    error = float(np.max(np.abs(got - want)))
    scale = float(np.max(np.abs(want))) or 1.0
    micro = cuda.time_us(lambda: cuda.launch(function, case["grid"], case["block"], pointers))
    for pointer in pointers:
        cuda.lib.cuMemFree_v2(pointer.value)
    return {"max_abs_error": error, "max_rel_error": error / scale,
            "matches": bool(error <= 1e-4 * scale + 1e-5), "kernel_us": round(micro, 2)}


def _torch_us(case):
    """torch's own kernel (cuDNN/cuBLAS) for the same op and shapes, fp32, bias left out."""
    import torch
    import torch.nn.functional as F

    spec = case["torch"]
    dev = torch.device("cuda")
    if spec["op"] == "conv2d":
        x = torch.randn(*spec["x"], device=dev)
        w = torch.randn(*spec["w"], device=dev)
        fn = lambda: F.conv2d(x, w, padding=spec["pad"], groups=spec["groups"])  # noqa: E731
    else:
        a = torch.randn(*spec["a"], device=dev)
        b = torch.randn(*spec["b"], device=dev)
        fn = lambda: a @ b  # noqa: E731
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    rounds = []
    for _ in range(5):
        start.record()
        for _ in range(200):
            fn()
        stop.record()
        torch.cuda.synchronize()
        rounds.append(start.elapsed_time(stop) * 1e3 / 200)
    return {"us": round(float(np.median(rounds)), 2),
            "tf32_conv": bool(torch.backends.cudnn.allow_tf32),
            "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32), "torch": torch.__version__}


def _ort_providers():
    import onnxruntime as ort
    return {"version": ort.__version__, "providers": ort.get_available_providers()}


def _edgec_run(folder: str, extra: list) -> dict:
    """The device runtime (`python3 -m edgec_runtime run`, what a Jetson installs) on the Jetson onnxruntime artifact: with this machine's onnxruntime
    (CPU-only here) it should refuse in one line, exit 2, unless CPU fallback is allowed."""
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("EDGEC_ALLOW_CPU_FALLBACK", None)
    done = subprocess.run([sys.executable, "-m", "edgec_runtime", "run", folder, "--inputs", DIGITS_DATA,
                           *extra], capture_output=True, text=True, timeout=120, env=env)
    return {"rc": done.returncode, "stderr": done.stderr[-800:], "stdout": done.stdout[-300:]}


def device(in_dir: str, out_dir: str) -> int:
    os.makedirs(out_dir, exist_ok=True)
    result: dict = {"what": "TVM-generated (untuned, dlight default schedule) CUDA kernels "
                            "built on the compile host for sm_90, run here through the CUDA "
                            "driver API; compared with onnxruntime CPU outputs computed there",
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "python": sys.version.split()[0], "steps": {}, "cases": []}
    path = os.path.join(out_dir, "gpu_check.json")

    def save():
        with open(path, "w") as f:
            json.dump(result, f, indent=1, default=str)

    def step(name, fn):
        start = time.time()
        try:
            value = fn()
            result["steps"][name] = {"ok": True, "value": value, "s": round(time.time() - start, 2)}
            return value
        except Exception as error:
            result["steps"][name] = {"ok": False, "error": f"{type(error).__name__}: {error}",
                                     "trace": traceback.format_exc()[-1500:],
                                     "s": round(time.time() - start, 2)}
            return None
        finally:
            save()

    step("nvidia-smi", lambda: subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,memory.total",
         "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip())
    step("nvcc", lambda: subprocess.run(["nvcc", "--version"], capture_output=True, text=True,
                                        timeout=30).stdout.strip().splitlines()[-1])
    cuda = step("cuda-driver", lambda: Cuda())
    if cuda is not None:
        result["steps"]["cuda-driver"]["value"] = cuda.name
    summary = step("inputs", lambda: json.load(open(os.path.join(in_dir, "cases.json"))))
    if summary is None:
        return 1
    result["steps"]["inputs"]["value"] = [c["name"] for c in summary["cases"]]
    save()
    for case in summary["cases"]:
        entry = {"name": case["name"], "what": case.get("what"),
                 "cost_model_us": case.get("cost_model_us"), "grid": case.get("grid"),
                 "block": case.get("block")}
        result["cases"].append(entry)
        if "error" in case:
            entry["prepare_error"] = case["error"]
            save()
            continue
        case_dir = os.path.join(in_dir, case["name"])
        try:
            arrays = dict(np.load(os.path.join(case_dir, "arrays.npz")))
        except Exception as error:
            entry["error"] = f"arrays: {error}"
            save()
            continue
        if cuda is not None:
            try:
                with open(os.path.join(case_dir, f"kernel.{ARCH}.cubin"), "rb") as f:
                    entry["host_cubin"] = _run_cubin(cuda, f.read(), case, arrays)
            except Exception as error:
                entry["host_cubin"] = {"error": f"{type(error).__name__}: {error}"}
            save()
            try:
                with tempfile.TemporaryDirectory() as work:
                    target = os.path.join(work, "k.cubin")
                    start = time.time()
                    done = subprocess.run(
                        ["nvcc", "--cubin", "-O3", "-arch", ARCH, "--expt-relaxed-constexpr",
                         "--expt-extended-lambda", "-o", target,
                         os.path.join(case_dir, "kernel.cu")],
                        capture_output=True, text=True, timeout=120)
                    if done.returncode != 0:
                        raise RuntimeError(done.stdout[-600:] + done.stderr[-600:])
                    seconds = time.time() - start
                    with open(target, "rb") as f:
                        entry["device_nvcc"] = {"nvcc_s": round(seconds, 2),
                                                **_run_cubin(cuda, f.read(), case, arrays)}
            except Exception as error:
                entry["device_nvcc"] = {"error": f"{type(error).__name__}: {error}"[:1200]}
            save()
        try:
            entry["torch"] = _torch_us(case)
        except Exception as error:
            entry["torch"] = {"error": f"{type(error).__name__}: {error}"[:400]}
        save()
    if "ort_artifact" in summary and "folder" in summary["ort_artifact"]:
        step("ort-available-providers", _ort_providers)
        folder = os.path.join(in_dir, summary["ort_artifact"]["folder"])
        step("edgec-run-ort-gpu-artifact", lambda: _edgec_run(folder, []))
        step("edgec-run-ort-gpu-artifact-cpu-fallback",
             lambda: _edgec_run(folder, ["--allow-cpu-fallback"]))
    result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    save()
    for entry in result["cases"]:
        print(json.dumps(entry))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", default=INPUTS)
    d = sub.add_parser("device")
    d.add_argument("--inputs", default=INPUTS)
    d.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    if args.mode == "prepare":
        return prepare(args.out)
    return device(args.inputs, args.out)


if __name__ == "__main__":
    sys.exit(main())
