"""Facts about the machine edgec runs on, for the ``host`` target's ``auto`` fields.

Everything is read once and cached. LLVM's name for this CPU comes from TVM, which
takes seconds to import, so it is asked only when a spec actually uses ``cpu auto``.
"""

from __future__ import annotations

import functools
import os
import platform
import re
from pathlib import Path

from edgec.dsl.units import Quantity
from edgec.machine import cache_file as _cache_file
from edgec.machine import cpuinfo as _cpuinfo
from edgec.machine import flags as _flags
from edgec.machine import onnxruntime_saturates

# platform.machine() spellings -> the spec language's architecture names.
_ARCHITECTURES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64",
                  "arm64": "aarch64", "armv7l": "armv7", "armv7": "armv7"}
TRIPLES = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu",
           "armv7": "armv7l-linux-gnueabihf"}

# /proc/cpuinfo flag -> LLVM feature, for the features a kernel compiler cares about.
_X86_FEATURES = {"avx": "+avx", "avx2": "+avx2", "fma": "+fma", "f16c": "+f16c",
                 "avx512f": "+avx512f", "avx512bw": "+avx512bw", "avx512vl": "+avx512vl",
                 "avx512dq": "+avx512dq", "avx512_vnni": "+avx512vnni",
                 "avx_vnni": "+avxvnni", "avx512_bf16": "+avx512bf16",
                 "avx512fp16": "+avx512fp16"}
_ARM_FEATURES = {"asimd": "+neon", "neon": "+neon", "asimdhp": "+fullfp16",
                 "asimddp": "+dotprod", "i8mm": "+i8mm", "sve": "+sve", "vfpv4": "+vfp4"}


def architecture() -> str:
    machine = platform.machine().lower()
    return _ARCHITECTURES.get(machine, machine or "x86_64")


def triple() -> str:
    return TRIPLES.get(architecture(), f"{architecture()}-linux-gnu")


@functools.cache
def llvm_cpu() -> str:
    """LLVM's name for this CPU (``znver5``), or ``generic`` when TVM cannot say.

    Importing TVM takes seconds, which would dominate a no-op ``edgec compile``; the
    answer is kept in the cache folder, keyed by what /proc/cpuinfo says of the CPU
    and by TVM's version, so it is asked once per machine.
    """
    import hashlib
    import importlib.metadata
    import json

    try:
        tvm_version = importlib.metadata.version("apache-tvm")
    except importlib.metadata.PackageNotFoundError:
        tvm_version = "none"
    model = re.search(r"^model name\s*:\s*(.*)$", _cpuinfo(), re.MULTILINE)
    key = hashlib.sha256("|".join([model.group(1) if model else "", " ".join(sorted(_flags())),
                                   platform.machine(), tvm_version]).encode()).hexdigest()[:16]
    cache = _cache_file("host-cpu.json")
    try:
        known = json.loads(cache.read_text())
        if known.get("key") == key:
            return known["cpu"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    try:
        from tvm.target import codegen  # seconds to import: only when asked
        name = str(codegen.llvm_get_system_cpu()) or "generic"
    except Exception:  # noqa: BLE001 - any TVM trouble just means no better name
        return "generic"
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"key": key, "cpu": name}))
        os.replace(tmp, cache)
    except OSError:
        try:  # a full disk must not leave the half-written file behind
            tmp.unlink()
        except OSError:
            pass
    return name


def features() -> tuple[str, ...]:
    table = _X86_FEATURES if architecture() == "x86_64" else _ARM_FEATURES
    found = {feature for flag, feature in table.items() if flag in _flags()}
    return tuple(sorted(found))


def float_abi() -> str | None:
    return "hard" if architecture() == "armv7" else None


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def clock() -> Quantity | None:
    for path in ("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq",):
        try:
            return Quantity(round(int(Path(path).read_text()) / 1e6, 3), "GHz")
        except (OSError, ValueError):
            pass
    match = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", _cpuinfo(), re.MULTILINE)
    if match:
        return Quantity(round(float(match.group(1)) / 1000, 3), "GHz")
    return None


def memory() -> Quantity | None:
    match = re.search(r"^MemTotal:\s*(\d+) kB", _read("/proc/meminfo"), re.MULTILINE)
    if match:
        return Quantity(round(int(match.group(1)) / 1024 ** 2, 2), "GiB")
    return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _fp32_flops_per_cycle() -> int:
    """Per core: two FMA units of the widest vector (fp32 lanes x 2 ops x 2 units)."""
    flags = _flags()
    if architecture() == "x86_64":
        if "avx512f" in flags:
            return 64
        if "avx2" in flags and "fma" in flags:
            return 32
        return 8
    return 16 if architecture() == "aarch64" else 8


def peak() -> tuple[tuple[str, Quantity], ...]:
    """Estimated peak fp32 throughput: cores x clock x FLOP per cycle. An estimate:
    nothing on the machine states it."""
    ghz = clock()
    if ghz is None:
        return ()
    gflops = cores() * ghz.to("GHz") * _fp32_flops_per_cycle()
    return (("fp32", Quantity(round(gflops, 1), "GFLOPS")),)


def fast_precisions() -> tuple[str, ...]:
    flags = _flags()
    fast = ["fp32"]
    if {"avx512fp16", "asimdhp", "fphp"} & flags:
        fast.append("fp16")
    if {"avx512_vnni", "avx_vnni", "asimddp"} & flags:
        fast.append("int8")
    return tuple(fast)


def int8_accumulation() -> str:
    """``int32`` or ``int16-saturating``: how onnxruntime's u8 x s8 kernels add up
    products on this machine.

    The CPU flags say what to expect (VNNI's vpdpbusd accumulates in int32, AVX2's
    vpmaddubsw saturates int16 pair sums); what decides is onnxruntime's own kernel
    choice, so a 64x128 int8 MatMul with 8-bit weights and activations near 255 is
    run once and compared with exact arithmetic (`onnxruntime_saturates`). That takes
    a fraction of a second, so the answer is cached per CPU and onnxruntime version;
    without onnxruntime the flags alone decide.
    """
    measured = onnxruntime_saturates()
    if measured is None:
        from edgec.dsl.spec import default_int8_accumulation
        return default_int8_accumulation(architecture(), features())
    return "int16-saturating" if measured else "int32"


def detect(field_name: str):
    """The detected value of one target field (spelled as in the spec language)."""
    return {
        "arch": architecture, "triple": triple, "cpu": llvm_cpu, "features": features,
        "cores": cores, "clock": clock, "memory": memory, "bandwidth": lambda: None,
        "peak": peak, "fast-precisions": fast_precisions,
        "int8-accumulation": int8_accumulation,
    }[field_name]()
