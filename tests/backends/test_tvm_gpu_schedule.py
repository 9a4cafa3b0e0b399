"""edgec.backends.tvm_gpu_schedule: TVM's CUDA pipeline whose dlight step hands a function
a rule raises on to the next rule. Built for the Jetson's sm_87 (CUDA codegen needs no GPU;
nothing runs here). A squeeze-and-excitation block, on which TVM 0.27's own pipeline
fails, builds; a function no rule raises on is scheduled exactly as TVM schedules it."""

from __future__ import annotations

import re

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import numpy as np

from edgec.testing.required import import_or_missing

tvm = import_or_missing("tvm")

from edgec.backends.tvm_gpu_schedule import (RULE_NAMES, ScheduleFailed,  # noqa: E402
                                             ScheduleRecord, cuda_pipeline, schedule_function,
                                             tolerant_default_schedule)

JETSON = {"kind": "cuda", "arch": "sm_87", "max_threads_per_block": 1024,
          "max_shared_memory_per_block": 49152, "thread_warp_size": 32,
          "host": {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}}


def _squeeze_excite(channels: int = 16, squeezed: int = 8, size: int = 12,
                    excite: bool = True) -> onnx.ModelProto:
    """MobileNetV3's SE block: x * HardSigmoid(Conv(Relu(Conv(GlobalAveragePool(x))))),
    after a 3x3 conv, and a Gemm classifier head; the batch symbolic, as exported (with
    batch 1 bound, TVM's Matmul rule takes the function). ``excite=False`` leaves out the
    multiply back onto x (the pooled branch then feeds the head)."""
    rng = np.random.default_rng(0)

    def weight(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)

    nodes = [
        helper.make_node("Conv", ["input", "w0", "b0"], ["x"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
        helper.make_node("Conv", ["pooled", "w1", "b1"], ["squeezed"]),
        helper.make_node("Relu", ["squeezed"], ["squeezed_relu"]),
        helper.make_node("Conv", ["squeezed_relu", "w2", "b2"], ["excited"]),
        helper.make_node("HardSigmoid", ["excited"], ["gate"], alpha=0.2, beta=0.5),
    ]
    if excite:
        nodes += [helper.make_node("Mul", ["x", "gate"], ["scaled"]),
                  helper.make_node("GlobalAveragePool", ["scaled"], ["features"])]
    else:
        nodes += [helper.make_node("Identity", ["gate"], ["features"])]
    nodes += [helper.make_node("Flatten", ["features"], ["flat"]),
              helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"], transB=1),
              helper.make_node("Softmax", ["logits"], ["output"], axis=1)]
    graph = helper.make_graph(
        nodes, "squeeze_excite",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
        [weight("w0", channels, 3, 3, 3), weight("b0", channels),
         weight("w1", squeezed, channels, 1, 1), weight("b1", squeezed),
         weight("w2", channels, squeezed, 1, 1), weight("b2", channels),
         weight("w3", 10, channels), weight("b3", 10)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _fused(model: onnx.ModelProto):
    """The module the tvm backend hands to `tvm.compile`: imported, decomposed, fused."""
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(model, keep_params_in_input=False)
    mod = relax.transform.DecomposeOpsForInference()(mod)
    return relax.get_pipeline("zero")(mod)


def _scheduled(mod, target, schedule_pass):
    """``mod`` through TVM's CUDA dispatch and legalize passes, with ``schedule_pass`` as
    the dlight step: the PrimFuncs as code generation would get them."""
    from tvm.relax.backend.cuda import pipeline as cuda

    legalize = cuda.legalize_passes(target)
    assert legalize[-1].info.name == "ApplyDefaultSchedule"
    with target:
        return tvm.transform.Sequential(cuda.library_dispatch_passes(target) + legalize[:-1]
                                        + [schedule_pass])(mod)


def _tvm_default_schedule():
    from tvm.s_tir import dlight

    return dlight.ApplyDefaultSchedule(*(getattr(dlight.gpu, name)() for name in RULE_NAMES))


def _prim_funcs(mod) -> dict:
    from tvm import tirx

    return {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}


def test_tvm_own_cuda_pipeline_fails_on_a_squeeze_excite_block():
    """What the tolerant pass is for: TVM 0.27's dlight Matmul rule asserts on the fused
    excitation conv + HardSigmoid + broadcast multiply. Should TVM fix it, this fails and
    the pass can go."""
    target = tvm.target.Target(JETSON)
    with pytest.raises(AssertionError, match="cache-write stage that are not properly inlined"):
        tvm.compile(_fused(_squeeze_excite()), target=target)


def test_the_squeeze_excite_block_builds_with_the_failing_function_handed_on():
    target = tvm.target.Target(JETSON)
    record = ScheduleRecord()
    executable = tvm.compile(_fused(_squeeze_excite()), target=target,
                             relax_pipeline=cuda_pipeline(target, record))
    from edgec.backends.tvm import _find_module

    assert "__global__" in _find_module(executable.mod, "cuda").inspect_source()
    assert len(record.failures) == 1, record.failures
    failure = record.failures[0]
    assert (failure.rule, failure.scheduled_by) == ("Matmul", "Fallback")
    assert failure.function.startswith("fused_conv2d") and "multiply" in failure.function
    assert failure.error.startswith("AssertionError: There are some consumers")
    note = record.note()
    assert note is not None and failure.function in note and "Fallback" in note and "\n" not in note


def test_functions_no_rule_raises_on_are_scheduled_as_tvm_schedules_them():
    """Every function but the one handed on is TVM's own schedule, structurally."""
    target = tvm.target.Target(JETSON)
    mod = _fused(_squeeze_excite())
    record = ScheduleRecord()
    ours = _prim_funcs(_scheduled(mod, target, tolerant_default_schedule(record)))
    (failing,) = [f.function for f in record.failures]
    tvm_own = {}
    from tvm.s_tir.dlight.base.transform import _apply_rules
    from tvm.s_tir import dlight

    rules = [getattr(dlight.gpu, name)() for name in RULE_NAMES]
    unscheduled = _prim_funcs(_scheduled(mod, target, tvm.transform.Sequential([])))
    for name, func in unscheduled.items():
        if name == failing:
            continue
        space = _apply_rules(func, target, rules, tunable=False)
        tvm_own[name] = func if space is None else space[0].mod["main"].with_attr(
            "tirx.is_scheduled", True)
    assert len(tvm_own) >= 5  # convs, pools, the Gemm, softmax's reductions
    for name, func in tvm_own.items():
        tvm.ir.assert_structural_equal(ours[name], func)


def _serial(func):
    """``func`` with its GPU thread bindings made serial loops: the kernels' grids run one
    thread after another on a CPU. The same result as on the GPU for schedules without
    shared memory or barriers (the Fallback rule's)."""
    text = func.script()
    assert "shared" not in text and "tvm_storage_sync" not in text
    serial, bound = re.subn(r'T\.thread_binding\((.*?), thread="\w+\.\w+"\)', r"T.serial(\1)", text)
    assert bound >= 2
    return tvm.script.from_source(serial)


def _run_on_cpu(func, batch: int, seed: int = 0) -> np.ndarray:
    """``func`` built for this CPU and called on random inputs (its symbolic batch set to
    ``batch``); the last parameter is its output."""
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                      target="llvm")
    rng = np.random.default_rng(seed)
    arrays = []
    for param in func.params:
        shape = [batch if not isinstance(d, tvm.tirx.IntImm) else int(d)
                 for d in param.ty.shape]
        arrays.append(rng.standard_normal(shape).astype(np.float32))
    arrays[-1][:] = 0
    tensors = [tvm.runtime.tensor(a) for a in arrays]
    lib["main"](*tensors)
    return tensors[-1].numpy()


def test_the_handed_on_function_computes_what_it_computed_before_scheduling():
    """No GPU here: the Fallback schedule of the squeeze-and-excitation function, its grid
    run serially on the CPU, against the unscheduled function on the CPU; exact (the
    schedule reorders no reduction)."""
    target = tvm.target.Target(JETSON)
    mod = _fused(_squeeze_excite())
    record = ScheduleRecord()
    scheduled = _prim_funcs(_scheduled(mod, target, tolerant_default_schedule(record)))
    unscheduled = _prim_funcs(_scheduled(mod, target, tvm.transform.Sequential([])))
    (name,) = [f.function for f in record.failures]
    want = _run_on_cpu(unscheduled[name], batch=2)
    got = _run_on_cpu(_serial(scheduled[name]), batch=2)
    assert np.abs(want).max() > 0.1
    np.testing.assert_array_equal(got, want)


def test_a_module_no_rule_raises_on_is_tvm_own_build():
    """Without the broadcast multiply nothing raises: the whole module is what TVM's
    ApplyDefaultSchedule gives, and nothing is recorded."""
    target = tvm.target.Target(JETSON)
    mod = _fused(_squeeze_excite(excite=False))
    record = ScheduleRecord()
    ours = _scheduled(mod, target, tolerant_default_schedule(record))
    tvm.ir.assert_structural_equal(ours, _scheduled(mod, target, _tvm_default_schedule()))
    assert record.failures == [] and record.note() is None


def _trivial_prim_func():
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def add_one(a: T.Buffer((64,), "float32"), b: T.Buffer((64,), "float32")):
        for i in range(64):
            with T.sblock("b"):
                vi = T.axis.remap("S", [i])
                b[vi] = a[vi] + T.float32(1)

    return add_one


class _Raises:
    def apply(self, func, target, tunable):
        raise AssertionError("a rule's own check failed\nsecond line")


class _Declines:
    def apply(self, func, target, tunable):
        return None


def test_a_function_every_applicable_rule_raises_on_fails_naming_it():
    target = tvm.target.Target(JETSON)
    record = ScheduleRecord()
    with pytest.raises(ScheduleFailed, match="fused function 'add_one': the First rule raised "
                                             "AssertionError: second line"):
        schedule_function("add_one", _trivial_prim_func(), target,
                          [("First", _Raises()), ("Second", _Declines())], record)
    assert [(f.rule, f.scheduled_by) for f in record.failures] == [("First", None)]


def test_the_first_rule_that_applies_wins_and_declining_is_not_a_failure():
    from tvm.s_tir import dlight

    target = tvm.target.Target(JETSON)
    record = ScheduleRecord()
    space = schedule_function("add_one", _trivial_prim_func(), target,
                              [("Declines", _Declines()), ("Fallback", dlight.gpu.Fallback())],
                              record)
    assert len(space) == 1 and record.failures == []
    assert schedule_function("add_one", _trivial_prim_func(), target,
                             [("Declines", _Declines())], record) is None
