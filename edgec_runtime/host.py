"""What this machine is, decided where the artifact runs: architecture, CPU features,
the backend runtimes installed and their versions. `problems` compares an artifact's
manifest with these facts; tests pass fake `HostFacts`.

CPU features come from the kernel: on Arm from the auxiliary vector (``AT_HWCAP``,
``AT_HWCAP2``; qemu-user emulates these for the CPU it emulates, while its
/proc/cpuinfo is the host's) and /proc/cpuinfo ``Features``; on x86 from /proc/cpuinfo
``flags``.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import importlib.util
import os
import platform
import re
from dataclasses import dataclass, field


def normalize_arch(machine: str) -> str:
    """An architecture name as the spec language writes it (x86_64, aarch64, armv7)."""
    machine = (machine or "").lower()
    if machine in ("amd64", "x86_64", "x86-64", "x64"):
        return "x86_64"
    if machine in ("arm64", "aarch64", "aarch64_be"):
        return "aarch64"
    if machine.startswith(("armv7", "armv8l", "armhf")) or machine == "arm":
        return "armv7"
    return machine


def arch_of_triple(triple: str) -> str:
    return normalize_arch((triple or "").split("-", 1)[0])


@dataclass
class HostFacts:
    arch: str
    cpu_features: frozenset[str]
    # runtime name -> version text, or None when it is not installed
    runtimes: dict[str, str | None] = field(default_factory=dict)
    # what else a runtime offers: "ort.providers" -> list, "tvm.cuda" -> bool
    extra: dict[str, object] = field(default_factory=dict)


# --------------------------------------------------------------------------- CPU features

# Linux AT_HWCAP / AT_HWCAP2 bits on aarch64 (arch/arm64/include/uapi/asm/hwcap.h).
_AARCH64_HWCAP = ["fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics",
                  "fphp", "asimdhp", "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop",
                  "sha3", "sm3", "sm4", "asimddp", "sha512", "sve", "asimdfhm", "dit", "uscat",
                  "ilrcpc", "flagm", "ssbs", "sb", "paca", "pacg"]
_AARCH64_HWCAP2 = ["dcpodp", "sve2", "sveaes", "svepmull", "svebitperm", "svesha3", "svesm4",
                   "flagm2", "frint", "svei8mm", "svef32mm", "svef64mm", "svebf16", "i8mm",
                   "bf16", "dgh", "rng", "bti"]
# 32-bit Arm AT_HWCAP bits (arch/arm/include/uapi/asm/hwcap.h).
_ARM_HWCAP = ["swp", "half", "thumb", "26bit", "fastmult", "fpa", "vfp", "edsp", "java",
              "iwmmxt", "crunch", "thumbee", "neon", "vfpv3", "vfpv3d16", "tls", "vfpv4",
              "idiva", "idivt", "vfpd32", "lpae", "evtstrm"]


def _auxv_features(arch: str) -> set[str]:
    try:
        libc = ctypes.CDLL(None)
        getauxval = libc.getauxval
    except (OSError, AttributeError):
        return set()
    getauxval.restype = ctypes.c_ulong
    getauxval.argtypes = [ctypes.c_ulong]
    out: set[str] = set()
    if arch == "aarch64":
        tables = [(16, _AARCH64_HWCAP), (26, _AARCH64_HWCAP2)]
    elif arch == "armv7":
        tables = [(16, _ARM_HWCAP)]
    else:
        return out
    for key, names in tables:
        bits = getauxval(key)
        out.update(name for i, name in enumerate(names) if bits >> i & 1)
    return out


def _cpuinfo_features(arch: str) -> set[str]:
    try:
        with open("/proc/cpuinfo", "rb") as f:
            text = f.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        return set()
    key = "flags" if arch == "x86_64" else "features"
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == key:
            words = set(value.split())
            # qemu-user shows the host's /proc/cpuinfo: x86 flags on an emulated Arm.
            if arch != "x86_64" and ({"sse2", "fpu", "vme"} & words):
                return set()
            return words
    return set()


def cpu_features(arch: str) -> frozenset[str]:
    return frozenset(_auxv_features(arch) | _cpuinfo_features(arch))


# LLVM attribute (mattr, without +) -> the kernel's name(s) for it, per architecture.
# Every listed name must be present. Attributes not listed are compared by name.
_X86_NAMES = {"sse4.1": ["sse4_1"], "sse4.2": ["sse4_2"], "sse4a": ["sse4a"],
              "bmi": ["bmi1"], "lzcnt": ["abm"], "sahf": ["lahf_lm"],
              "avx512vnni": ["avx512_vnni"], "avx512bf16": ["avx512_bf16"],
              "avx512vbmi2": ["avx512_vbmi2"], "avx512bitalg": ["avx512_bitalg"],
              "avx512vpopcntdq": ["avx512_vpopcntdq"], "avx512fp16": ["avx512_fp16"],
              "avxvnni": ["avx_vnni"], "cx16": ["cx16"], "fma": ["fma"], "f16c": ["f16c"],
              "amx-int8": ["amx_int8"], "amx-bf16": ["amx_bf16"], "amx-tile": ["amx_tile"],
              "64bit": [], "cmov": ["cmov"], "cx8": ["cx8"], "mmx": ["mmx"], "fxsr": ["fxsr"],
              "sse": ["sse"], "sse2": ["sse2"], "sse3": ["pni"], "ssse3": ["ssse3"],
              "popcnt": ["popcnt"], "movbe": ["movbe"], "xsave": ["xsave"], "fsgsbase": [],
              "prfchw": [], "crc32": [], "x87": [], "nopl": []}
_AARCH64_NAMES = {"neon": ["asimd"], "fp-armv8": ["fp"], "dotprod": ["asimddp"],
                  "fullfp16": ["fphp", "asimdhp"], "fp16fml": ["asimdfhm"], "i8mm": ["i8mm"],
                  "bf16": ["bf16"], "sve": ["sve"], "sve2": ["sve2"], "crc": ["crc32"],
                  "crypto": ["aes", "pmull", "sha1", "sha2"], "aes": ["aes", "pmull"],
                  "sha2": ["sha1", "sha2"], "sha3": ["sha3", "sha512"], "lse": ["atomics"],
                  "rdm": ["asimdrdm"], "rcpc": ["lrcpc"], "jsconv": ["jscvt"],
                  "complxnum": ["fcma"], "v8a": [], "v8.2a": [], "v8.1a": []}
_ARMV7_NAMES = {"neon": ["neon"], "vfp4": ["vfpv4"], "vfp3": ["vfpv3"], "vfp2": ["vfp"],
                "thumb2": [], "thumb-mode": [], "d32": ["vfpd32"], "hwdiv": ["idivt"],
                "hwdiv-arm": ["idiva"], "fp16": ["half"], "v7": []}
_NAMES = {"x86_64": _X86_NAMES, "aarch64": _AARCH64_NAMES, "armv7": _ARMV7_NAMES}

# Features an LLVM -mcpu implies (only the ones that matter for vector code). An mcpu
# not listed here implies nothing edgec can check; its explicit mattr are still checked.
_X86_V2 = ["sse4.1", "sse4.2", "ssse3", "popcnt", "cx16"]
_X86_V3 = _X86_V2 + ["avx", "avx2", "fma", "f16c", "bmi", "bmi2", "movbe"]
_X86_V4 = _X86_V3 + ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"]
_ZEN4 = _X86_V4 + ["avx512vnni", "avx512bf16", "avx512vbmi", "avx512ifma"]
MCPU_FEATURES = {
    "x86-64": [], "x86-64-v2": _X86_V2, "x86-64-v3": _X86_V3, "x86-64-v4": _X86_V4,
    "haswell": _X86_V3, "broadwell": _X86_V3, "skylake": _X86_V3, "znver1": _X86_V3,
    "znver2": _X86_V3, "znver3": _X86_V3, "znver4": _ZEN4, "znver5": _ZEN4,
    "skylake-avx512": _X86_V4, "cascadelake": _X86_V4 + ["avx512vnni"],
    "icelake-server": _X86_V4 + ["avx512vnni"], "sapphirerapids": _X86_V4 + ["avx512vnni"],
    "cortex-a53": ["neon"], "cortex-a55": ["neon", "dotprod", "fullfp16"],
    "cortex-a57": ["neon"], "cortex-a72": ["neon"], "cortex-a73": ["neon"],
    "cortex-a76": ["neon", "dotprod", "fullfp16"], "cortex-a78": ["neon", "dotprod", "fullfp16"],
    "cortex-a78ae": ["neon", "dotprod", "fullfp16"], "neoverse-n1": ["neon", "dotprod", "fullfp16"],
    "neoverse-v1": ["neon", "dotprod", "fullfp16", "sve", "i8mm", "bf16"],
    "neoverse-n2": ["neon", "dotprod", "fullfp16", "sve2", "i8mm", "bf16"],
    "cortex-a7": ["neon"], "cortex-a9": [], "cortex-a15": ["neon"],
    "generic": [],
}


def required_features(target: dict, arch: str) -> list[str]:
    """The LLVM features a TVM target description (``{"kind": "llvm", "mcpu": ...,
    "mattr": [...]}``) compiles for: implied by mcpu, plus every ``+feature``."""
    wanted: list[str] = []
    mcpu = str(target.get("mcpu") or "")
    wanted += MCPU_FEATURES.get(mcpu, [])
    mattr = target.get("mattr") or []
    if isinstance(mattr, str):
        mattr = mattr.split(",")
    if not isinstance(mattr, list):
        mattr = []
    removed = set()
    for attr in mattr:
        attr = str(attr).strip()
        if attr.startswith("-"):
            removed.add(attr[1:])
        elif attr:
            wanted.append(attr.lstrip("+"))
    host = target.get("host")
    if isinstance(host, dict) and host is not target:
        wanted += required_features(host, arch)
    return [f for f in dict.fromkeys(wanted) if f not in removed]


def missing_features(required: list[str], arch: str, have: frozenset[str]) -> list[str]:
    """The required LLVM features whose kernel names this CPU does not report."""
    names = _NAMES.get(arch, {})
    missing = []
    for feature in required:
        kernel = names.get(feature)
        if kernel is None:
            kernel = [feature.replace(".", "_").replace("-", "_").lower()]
        if not all(k in have for k in kernel):
            missing.append(feature)
    return missing


# --------------------------------------------------------------------------- runtimes


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def ort_version() -> str | None:
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    version = _dist_version("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino",
                            "onnxruntime-directml", "onnxruntime-silicon", "ort-nightly")
    if version is None:
        try:
            import onnxruntime
            version = getattr(onnxruntime, "__version__", None)
        except Exception:  # a broken install: treat as absent
            return None
    return version


def tvm_runtime_library() -> str | None:
    """libtvm_runtime.so: $EDGEC_TVM_RUNTIME_LIB, else the apache-tvm package's, found
    without importing tvm (importing it loads the whole compiler)."""
    override = os.environ.get("EDGEC_TVM_RUNTIME_LIB")
    if override:
        return override if os.path.isfile(override) else None
    try:
        spec = importlib.util.find_spec("tvm")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for name in ("lib/libtvm_runtime.so", "libtvm_runtime.so", "lib/libtvm_runtime.dylib"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    return None


def tvm_version() -> str | None:
    if importlib.util.find_spec("tvm_ffi") is None or tvm_runtime_library() is None:
        return None
    version = os.environ.get("EDGEC_TVM_RUNTIME_VERSION") or _dist_version("apache-tvm", "tvm")
    if version is None:
        spec = importlib.util.find_spec("tvm")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            try:
                with open(os.path.join(folder, "_version.py")) as f:
                    match = re.search(r"""version\s*=\s*['"]([^'"]+)""", f.read())
                if match:
                    version = match.group(1)
            except OSError:
                pass
    return version or "unknown"


@functools.lru_cache(maxsize=1)
def host_facts() -> HostFacts:
    arch = normalize_arch(platform.machine())
    return HostFacts(arch=arch, cpu_features=cpu_features(arch),
                     runtimes={"ort": ort_version(), "tvm": tvm_version()})


def ort_providers() -> list[str]:
    try:
        import onnxruntime
        return list(onnxruntime.get_available_providers())
    except Exception:
        return []


# --------------------------------------------------------------------------- the decision


def _version_tuple(text: str | None) -> tuple[int, ...]:
    parts = []
    for piece in str(text or "").split(".")[:3]:
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
    return tuple(parts)


INSTALL_HINT = {"ort": "pip install 'edgec-runtime[ort]' (numpy + onnxruntime)",
                "tvm": "pip install 'edgec-runtime[tvm]' (numpy + apache-tvm's runtime)"}


def problems(backend: str, details: dict, facts: HostFacts) -> list[str]:
    """Why this machine cannot run an artifact of ``backend`` with these manifest
    ``details`` (an empty list: it can). Each reason names what is missing."""
    out: list[str] = []
    details = details if isinstance(details, dict) else {}
    have = facts.runtimes.get(backend)
    if backend == "ort":
        if have is None:
            return [f"onnxruntime is not installed here; {INSTALL_HINT['ort']}"]
        built = details.get("onnxruntime_version")
        if built and _version_tuple(built)[:1] != _version_tuple(have)[:1]:
            out.append(f"onnxruntime {have} is installed here; the artifact was built and "
                       f"checked with onnxruntime {built} (a different major version)")
        settings = details.get("settings")
        settings = settings if isinstance(settings, dict) else {}
        providers = settings.get("providers")
        if isinstance(providers, list) and all(
                isinstance(p, str) or (isinstance(p, list) and p and isinstance(p[0], str))
                for p in providers):
            from edgec_runtime.ort_runner import missing_gpu_providers

            available = facts.extra.get("ort.providers")
            if available is None:
                available = ort_providers()
            why = missing_gpu_providers(settings, list(available))
            if why:
                out.append(why)
        return out
    if backend == "tvm":
        target = details.get("target")
        target = target if isinstance(target, dict) else {}
        triple = details.get("triple") or target.get("mtriple") or ""
        triple = triple if isinstance(triple, str) else ""
        arch = details.get("arch") or arch_of_triple(triple)
        if isinstance(target.get("host"), dict) and not details.get("arch"):
            arch = arch_of_triple(str(target["host"].get("mtriple", triple)))
        arch = arch if isinstance(arch, str) else ""
        if arch and normalize_arch(arch) != facts.arch:
            name = details.get("target_name") or "another machine"
            out.append(f"the TVM module is built for {name} ({normalize_arch(arch)}"
                       f"{', ' + triple if triple else ''}); this machine is {facts.arch}: "
                       "copy the artifact to the device and run it there")
            return out
        if have is None:
            return [f"TVM's runtime is not installed here (tvm_ffi and libtvm_runtime.so); "
                    f"{INSTALL_HINT['tvm']}"]
        built = details.get("tvm_version")
        if built and have != "unknown" and \
                _version_tuple(built)[:2] != _version_tuple(have)[:2]:
            out.append(f"TVM runtime {have} is installed here; the module was built with TVM "
                       f"{built}, and TVM modules load only in the same release line "
                       f"({'.'.join(map(str, _version_tuple(built)[:2]))}.x)")
        if target:
            host_target = target.get("host") if isinstance(target.get("host"), dict) else target
            required = required_features(host_target, facts.arch)
            lacking = missing_features(required, facts.arch, facts.cpu_features)
            if lacking:
                out.append(f"the TVM module is compiled for CPU features this CPU lacks: "
                           f"{', '.join(lacking)} (target cpu {host_target.get('mcpu') or '?'}); "
                           "compile for this CPU")
        accelerator = details.get("accelerator")
        if isinstance(accelerator, dict) and accelerator.get("kind") == "cuda":
            cuda = facts.extra.get("tvm.cuda")
            if cuda is None:
                cuda = _tvm_cuda_enabled()
            if not cuda:
                out.append(f"the TVM module for {details.get('target_name') or 'a CUDA GPU'} "
                           "runs its kernels on a CUDA GPU, but this TVM runtime was built "
                           "without CUDA (the apache-tvm wheels are): install a TVM built with "
                           "USE_CUDA=ON on the device")
            else:
                gpu = facts.extra.get("cuda.device")
                if gpu is None:
                    gpu = _cuda_device()
                if not gpu:
                    out.append("the TVM module needs a CUDA GPU and this machine shows none")
        return out
    return [f"this runtime cannot run a '{backend}' artifact (it runs ort and tvm)"]


def _cuda_device() -> bool:
    try:
        from edgec_runtime import tvm_runner
        return tvm_runner.cuda_device_exists()
    except Exception:
        return False


def _tvm_cuda_enabled() -> bool:
    try:
        from edgec_runtime import tvm_runner
        return tvm_runner.runtime_enabled("cuda")
    except Exception:
        return False
