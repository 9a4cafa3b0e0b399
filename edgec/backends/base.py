"""What a backend is: it turns optimized ONNX into files in an artifact folder, loads them
back to run, and measures latency; and it says what it can do (`Capabilities`), so that
the CLI, the spec checker, the planner and the pass pipeline ask it instead of naming it.

Backends know the IR's ONNX form and the target; they do not know the spec language's
syntax. Each backend registers under the ``edgec.backends`` entry-point group, the
built-in ones included (there is one way to add a backend).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from edgec.diagnostics import EdgecError
from edgec.progress import Progress, no_progress

if TYPE_CHECKING:  # the registry and the CLI import this module: it stays light
    import numpy as np
    import onnx

    from edgec.dsl.spec import Target

__all__ = ["Backend", "BackendError", "BuildOptions", "BuildResult", "Capabilities",
           "LatencyStats", "Progress", "RpcConfig", "Runner", "no_progress", "time_calls"]


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, as data. The defaults are what any backend that runs
    ONNX can claim; a plugin that declares nothing gets them.

    ``precisions``: those it has kernels for: a precision it lacks is never planned on
    it (int8 means integer kernels for a Q/DQ model, not fp32 compute around
    quantize/dequantize). ``precision_notes`` says why one is missing, for the
    planner's "skipped" lines: ``{"int8": "TVM 0.27 runs QDQ in fp32"}``.

    ``pass_options``: options it needs on passes of the default pipeline, set on every
    invocation of the pass: ``{"fuse": {"exclude": "attention"}}``. ``final_passes``:
    passes run last for it, when installed: ``("legalize-tvm",)``.

    ``measures_over_rpc``: its latency (and tuning) reaches devices through TVM RPC.
    ``costly_build``: a build takes minutes (compiling, tuning): `backend auto` tries it
    after the cheap ones, and the planner builds it only where it could still win.
    ``in_auto``: `backend auto` tries it; a plugin is tried only when named, unless it
    says so here.
    """

    precisions: tuple[str, ...] = ("fp32", "fp16")
    precision_notes: Mapping[str, str] = field(default_factory=dict)
    pass_options: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    final_passes: tuple[str, ...] = ()
    measures_over_rpc: bool = False
    costly_build: bool = False
    in_auto: bool = False


@dataclass
class BuildOptions:
    """What the compile driver asks of a backend beyond the model and the target."""

    cache_dir: str                       # persistent caches (tuning databases) live here
    tuning_trials: int | None = None     # None and no wall time: no tuning
    tuning_seconds: float | None = None
    seed: int = 0
    threads: int | None = None           # intra-op threads for measurement; None: all cores
    # The batch the spec's latency budget is judged at (`at batch N`, default 1): tuning
    # binds a symbolic batch dimension to it, since MetaSchedule tunes static shapes only.
    batch: int = 1
    rpc: "RpcConfig | None" = None
    progress: Progress = no_progress


@dataclass(frozen=True)
class RpcConfig:
    """A TVM RPC tracker and the key of the device servers registered with it.

    ``emulated``: the servers run under an emulator (qemu-user): they run the module,
    so accuracy is scored on its own outputs there, but their timings say nothing of
    the board's, so edgec neither takes latency from them nor tunes on them.
    """

    host: str
    port: int
    key: str
    emulated: bool = False

    @classmethod
    def parse(cls, tracker: str, key: str, emulated: bool = False) -> "RpcConfig":
        host, _, port = tracker.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected HOST:PORT for the RPC tracker, got '{tracker}'")
        return cls(host, int(port), key, emulated)

    @property
    def where(self) -> str:
        return f"rpc://{self.host}:{self.port}/{self.key}" + (" (emulated)" if self.emulated
                                                              else "")


@dataclass
class BuildResult:
    """What a backend wrote and what the manifest should say about it.

    ``files`` are paths relative to the artifact folder. ``runnable_here`` is False
    for modules built for another machine (cross-compiled). ``details`` goes into
    the manifest's ``backend`` section verbatim (JSON-ready, deterministic: no
    timestamps, no absolute paths). ``tuned`` says whether kernels were tuned;
    ``notes`` are human-readable facts for the report.
    """

    backend: str
    files: list[str]
    runnable_here: bool
    details: dict[str, Any] = field(default_factory=dict)
    tuned: bool = False
    notes: list[str] = field(default_factory=list)
    # The one batch the module takes when the backend bound the model's symbolic batch
    # dimension (TVM tuning does); None: the model's own batch dimension, symbolic or not.
    batch: int | None = None


@dataclass(frozen=True)
class LatencyStats:
    """Latency in seconds over ``samples`` timed runs after warm-up."""

    p50: float
    p90: float
    mean: float
    samples: int
    where: str  # "host", "rpc://HOST:PORT/KEY", "estimated"

    @classmethod
    def from_times(cls, times: list[float], where: str) -> "LatencyStats":
        ordered = sorted(times)
        return cls(p50=statistics.median(ordered), p90=_percentile(ordered, 90),
                   mean=statistics.fmean(ordered), samples=len(ordered), where=where)

    def to_json(self) -> dict:
        return {"p50_ms": self.p50 * 1e3, "p90_ms": self.p90 * 1e3, "mean_ms": self.mean * 1e3,
                "samples": self.samples, "where": self.where}

    def percentile(self, p: int) -> float:
        return self.p50 if p == 50 else self.p90


def _percentile(ordered: list[float], p: float) -> float:
    if len(ordered) == 1:
        return ordered[0]
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def time_calls(fn: Callable[[], Any], *, warmup: int = 5, repeats: int = 50,
               max_seconds: float = 10.0, min_seconds: float = 0.1,
               max_repeats: int = 1000) -> list[float]:
    """Wall times of ``fn()`` after warm-up; stops early once ``max_seconds`` are spent
    (at least 5 samples are always taken). A fast ``fn`` is timed past ``repeats`` until
    the samples add up to ``min_seconds`` (at most ``max_repeats`` samples): 50 runs of
    a 20 µs model are 1 ms of samples, which one scheduler hiccup on a busy machine
    moves."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    total = 0.0
    budget_end = time.perf_counter() + max_seconds
    while (len(times) < repeats or (total < min_seconds and len(times) < max_repeats)) \
            and (len(times) < 5 or time.perf_counter() < budget_end):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        total += times[-1]
    return times


class Runner(Protocol):
    """A loaded artifact module that runs on this host."""

    input_names: list[str]
    output_names: list[str]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Backend(Protocol):
    """A backend: registered under the ``edgec.backends`` entry points as a class (or
    factory) called with no arguments."""

    name: str
    capabilities: Capabilities

    def unavailable_reason(self, target: Target) -> str | None:
        """Why this backend cannot build for ``target`` on this host (None: it can):
        a missing package or toolchain, an accelerator it has no code generator for."""

    def describe_target(self, target: Target) -> dict[str, Any]:
        """``target`` as this backend's toolchain takes it (TVM: the JSON dict
        `tvm.target.Target` accepts; onnxruntime: its execution providers), JSON-ready.
        The translation lives here, not in the spec language."""

    def check_model(self, model: onnx.ModelProto, *, model_path: str | None = None) -> None:
        """Raise `ModelError` naming the op and node if the model cannot be taken.

        ``model_path`` is the file ``model`` was read from: tensors with external data
        (``model`` holds only their references) resolve in its folder, never in the
        current directory."""

    def build(self, model: onnx.ModelProto, target: Target, out_dir: str,
              options: BuildOptions, *, model_path: str | None = None) -> BuildResult:
        """Write the backend's files into ``out_dir`` (the artifact's temporary folder).
        ``model_path`` as for `check_model`."""

    def load(self, artifact_dir: str, details: dict[str, Any]) -> Runner:
        """Load a built artifact to run on this host (raise BackendError if it cannot)."""

    def measure(self, artifact_dir: str, details: dict[str, Any],
                inputs: Mapping[str, np.ndarray], options: BuildOptions) -> LatencyStats:
        """Latency of the artifact on ``inputs``: on this host, or over RPC if
        ``options.rpc`` is set."""


def uses_external_data(model: onnx.ModelProto) -> bool:
    import onnx

    from edgec.frontend.onnx_import import all_tensor_protos

    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in all_tensor_protos(model))


class BackendError(EdgecError):
    """A backend cannot do what was asked (missing toolchain, not runnable here)."""
