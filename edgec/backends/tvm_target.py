"""The spec's `Target` in TVM's terms: the JSON `tvm.target.Target` takes (LLVM for
the CPU, wrapped in CUDA for a CUDA accelerator) and this machine's architecture, for
the TVM backend, its tuning and its tests."""

from __future__ import annotations

import json
import platform
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgec.dsl.spec import Target


def host_arch() -> str:
    """This machine's architecture in the spec language's names (x86_64, aarch64, armv7)."""
    machine = platform.machine().lower()
    if machine in ("amd64", "x86_64"):
        return "x86_64"
    if machine in ("arm64", "aarch64"):
        return "aarch64"
    if machine.startswith("armv7") or machine.startswith("armv8l"):
        return "armv7"
    return machine


def target_dict(target: Target) -> dict:
    """The JSON dict `tvm.target.Target` accepts for ``target`` (TVM 0.27 rejects CLI
    strings): LLVM for the CPU, wrapped in CUDA for a CUDA accelerator."""
    llvm: dict = {"kind": "llvm", "mtriple": target.triple, "num-cores": target.cores}
    if target.cpu and target.cpu != "generic":
        llvm["mcpu"] = target.cpu
    if target.features:
        llvm["mattr"] = list(target.features)
    if target.float_abi:
        llvm["mfloat-abi"] = target.float_abi
    if target.accelerator is not None and target.accelerator.kind == "cuda":
        cuda: dict = {"kind": "cuda", "host": llvm}
        if target.accelerator.arch:
            cuda["arch"] = target.accelerator.arch
        return cuda
    return llvm


def target_json(target: Target) -> str:
    """The canonical JSON text of the target's TVM description (the tuning-cache key)."""
    return json.dumps(target_dict(target), sort_keys=True, separators=(",", ":"))



def is_cuda(target: Target) -> bool:
    return target.accelerator is not None and target.accelerator.kind == "cuda"




# Ampere's limits (all of sm_80..sm_89), which MetaSchedule's GPU rules read from the
# target; TVM's "cuda" kind does not fill them in from "arch".
CUDA_LIMITS = {"max_threads_per_block": 1024, "max_shared_memory_per_block": 49152,
               "thread_warp_size": 32}


def tvm_target_json(target: Target) -> dict:
    """The dict edgec hands to `tvm.target.Target`: `target_dict`, plus CUDA limits."""
    description = target_dict(target)
    if description.get("kind") == "cuda":
        description = {**CUDA_LIMITS, **description}
    return description
