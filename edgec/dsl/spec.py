"""The resolved spec: what the rest of edgec reads, with includes merged, the target
looked up and every default filled in.

`Spec.to_text()` prints it back in the spec language; that text parses to an equal
`Spec`, which is what the manifest records and what `edgec check` shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from edgec.dsl.units import Quantity

PRECISIONS = ("fp32", "fp16", "int8")
ARCHITECTURES = ("x86_64", "aarch64", "armv7")
SEARCH_MODES = ("first", "fastest")
# How a target's int8 kernels add up u8 x s8 products. int32: every product reaches an
# int32 accumulator (x86 VNNI vpdpbusd, Arm umull/sdot): 8-bit weights are exact.
# int16-saturating: x86 without VNNI sums adjacent pairs in int16 first (vpmaddubsw),
# which saturates for full-range weights: 7-bit weights keep it exact.
INT8_ACCUMULATIONS = ("int32", "int16-saturating")


def default_int8_accumulation(arch: str, features: tuple[str, ...]) -> str:
    """What an architecture's int8 kernels do unless the target says otherwise."""
    if arch == "x86_64" and not {"+avx512vnni", "+avxvnni"} & set(features):
        return "int16-saturating"
    return "int32"
PERCENTILES = (50, 90, 95, 99)


def quote(text: str) -> str:
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\t", "\\t"))
    return f'"{escaped}"'


@dataclass(frozen=True)
class Accelerator:
    """An offload device. Only CUDA GPUs exist so far; ``arch`` is the SM arch (sm_87)."""

    kind: str
    arch: str | None = None
    sm_count: int | None = None


@dataclass(frozen=True)
class Target:
    """The hardware a spec compiles for, with what a backend needs to build for it.
    Each backend translates it into its own toolchain's terms
    (`edgec.backends.Backend.describe_target`)."""

    name: str
    arch: str
    triple: str
    cpu: str = "generic"
    features: tuple[str, ...] = ()
    float_abi: str | None = None
    cores: int = 1
    clock: Quantity | None = None
    memory: Quantity | None = None
    bandwidth: Quantity | None = None
    accelerator: Accelerator | None = None
    # (precision, peak ops/s) pairs in PRECISIONS order.
    peak: tuple[tuple[str, Quantity], ...] = ()
    fast_precisions: tuple[str, ...] = ("fp32",)
    summary: str = ""
    # Fixed cost per kernel (accelerator) or per node (CPU runtime) in latency
    # estimates; None: the cost model's default for the accelerator kind.
    launch: Quantity | None = None
    # One of INT8_ACCUMULATIONS; None: the architecture's default (int8_saturates).
    int8_accumulation: str | None = None

    @property
    def int8_saturates(self) -> bool:
        """Whether full-range (8-bit) weights can saturate this target's int8 kernels."""
        accumulation = self.int8_accumulation or default_int8_accumulation(self.arch,
                                                                            self.features)
        return accumulation == "int16-saturating"

    def peak_for(self, precision: str) -> Quantity | None:
        return dict(self.peak).get(precision)

    def to_text(self, indent: str = "") -> str:
        inner = indent + "  "
        lines = [f"{indent}target {{", f"{inner}name {self.name}"]
        if self.summary:
            lines.append(f"{inner}summary {quote(self.summary)}")
        lines += [f"{inner}arch {self.arch}", f"{inner}triple {quote(self.triple)}",
                  f"{inner}cpu {quote(self.cpu)}"]
        if self.features:
            lines.append(f"{inner}features " + ", ".join(quote(f) for f in self.features))
        else:
            lines.append(f"{inner}features none")
        if self.float_abi:
            lines.append(f"{inner}float-abi {self.float_abi}")
        lines.append(f"{inner}cores {self.cores}")
        for key, value in (("clock", self.clock), ("memory", self.memory),
                           ("bandwidth", self.bandwidth)):
            if value is not None:
                lines.append(f"{inner}{key} {value}")
        if self.accelerator is None:
            lines.append(f"{inner}accelerator none")
        else:
            body = []
            if self.accelerator.arch:
                body.append(f"arch {self.accelerator.arch}")
            if self.accelerator.sm_count is not None:
                body.append(f"sm-count {self.accelerator.sm_count}")
            block = " { " + "; ".join(body) + " }" if body else ""
            lines.append(f"{inner}accelerator {self.accelerator.kind}{block}")
        for precision, value in self.peak:
            lines.append(f"{inner}peak {precision} {value}")
        lines.append(f"{inner}fast-precisions " + ", ".join(self.fast_precisions))
        if self.launch is not None:
            lines.append(f"{inner}launch {self.launch}")
        if self.int8_accumulation is not None:
            lines.append(f"{inner}int8-accumulation {self.int8_accumulation}")
        lines.append(f"{indent}}}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Latency:
    limit: Quantity
    percentile: int = 50
    batch: int = 1

    @property
    def seconds(self) -> float:
        return self.limit.to("s")


@dataclass(frozen=True)
class Budget:
    """Upper bounds; None means the spec sets no bound on that figure."""

    latency: Latency | None = None
    memory: Quantity | None = None
    size: Quantity | None = None


@dataclass(frozen=True)
class Accuracy:
    """How far the compiled model may drift from the fp32 model.

    ``tolerance`` keeps its unit: % and plain fractions for agreement and similarity
    drops, a plain number (absolute) or % (relative) for max-abs-error, dB for the SQNR
    floor. ``data`` and ``labels`` are absolute paths or globs; None means synthetic
    inputs drawn from the model's input types.
    """

    metric: str = "top1-agreement"
    tolerance: Quantity = Quantity(1.0, "%")
    data: str | None = None
    labels: str | None = None


@dataclass(frozen=True)
class Pruning:
    """Up to how much of the weights may be removed; structured removes whole channels.

    ``sparsity`` keeps the unit it was written in (50 % or 0.5); None means no pruning.
    """

    sparsity: Quantity | None = None
    structured: bool = True

    @property
    def fraction(self) -> float:
        return 0.0 if self.sparsity is None else self.sparsity.base


@dataclass(frozen=True)
class Tuning:
    """Kernel tuning budget; both None means no tuning. Whichever runs out first stops it."""

    trials: int | None = None
    wall_time: Quantity | None = None


@dataclass(frozen=True)
class Optimize:
    """What the compiler may do to meet the budget."""

    precisions: tuple[str, ...] = ("fp32",)
    per_layer_fallback: bool = True
    pruning: Pruning = Pruning()
    tuning: Tuning = Tuning()
    backend: str = "auto"   # auto, or a name in edgec.backends.backend_names()
    # Pass pipeline text as for `edgec opt -p`; None means the target's default.
    pipeline: str | None = None
    seed: int = 0
    # first: stop at the first configuration that holds every budget (they are tried
    # cheapest first); fastest: try them all and keep the fastest that holds.
    search: str = "first"


@dataclass(frozen=True)
class Spec:
    target: Target
    budget: Budget = Budget()
    accuracy: Accuracy = Accuracy()
    optimize: Optimize = Optimize()
    # Where it came from: the spec file and every file it included, in order.
    sources: tuple[str, ...] = field(default=(), compare=False)

    def to_text(self) -> str:
        """The spec in its own language, every default written out."""
        out = []
        if self.sources:
            out.append(f"# resolved from {self.sources[0]}")
            for included in self.sources[1:]:
                out.append(f"#   including {included}")
        out.append(self.target.to_text())

        out.append("budget {")
        budget = self.budget
        if budget.latency is None:
            out.append("  # no latency bound")
        else:
            lat = budget.latency
            out.append(f"  latency < {lat.limit} p{lat.percentile} at batch {lat.batch}")
        for key, value in (("memory", budget.memory), ("size", budget.size)):
            out.append(f"  {key} < {value}" if value is not None else f"  # no {key} bound")
        out.append("}")

        acc = self.accuracy
        out += ["accuracy {", f"  metric {acc.metric}", f"  tolerance {acc.tolerance}",
                f"  data {quote(acc.data) if acc.data else 'none'}",
                f"  labels {quote(acc.labels) if acc.labels else 'none'}", "}"]

        opt = self.optimize
        out += ["optimize {", "  precision " + ", ".join(opt.precisions),
                f"  fallback {'per-layer' if opt.per_layer_fallback else 'none'}"]
        if opt.pruning.sparsity is None:
            out.append("  prune none")
        else:
            kind = "structured" if opt.pruning.structured else "unstructured"
            out.append(f"  prune up to {opt.pruning.sparsity} {kind}")
        limits = []
        if opt.tuning.trials is not None:
            limits.append(f"{opt.tuning.trials} trials")
        if opt.tuning.wall_time is not None:
            limits.append(str(opt.tuning.wall_time))
        out.append("  tuning " + (", ".join(limits) if limits else "none"))
        out.append(f"  backend {opt.backend}")
        out.append(f"  pipeline {quote(opt.pipeline) if opt.pipeline is not None else 'default'}")
        out.append(f"  seed {opt.seed}")
        out.append(f"  search {opt.search}")
        out.append("}")
        return "\n".join(out) + "\n"

    def to_dict(self) -> dict:
        """JSON-ready form for manifests and ``edgec check --json``."""
        return _plain(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _plain(value):
    if isinstance(value, Quantity):
        return {"value": value.value, "unit": value.unit}
    if hasattr(value, "__dataclass_fields__"):
        return {name: _plain(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value
