"""edgec-runtime: run an edgec artifact on the device, with numpy and the backend's
runtime alone (onnxruntime, or TVM's runtime) — not the compiler.

    import edgec_runtime
    outputs = edgec_runtime.load("build/model").run({"input": x})

    python3 -m edgec_runtime run build/model --inputs x.npz -o y.npz
    python3 -m edgec_runtime bench build/model
    python3 -m edgec_runtime check build/model

Whether an artifact can run is decided here, where it runs: the architecture, the CPU
features its module was compiled for, the runtime installed and its version.
"""

from __future__ import annotations

__version__ = "0.1.0"

from edgec_runtime.errors import (ArtifactError, InputError, ModelLoadError, NotRunnableHere,
                                  RuntimeFailure)


def load(path):
    """Open an artifact folder: ``.manifest``, ``.run(inputs) -> outputs``, ``.bench()``."""
    from edgec_runtime.artifact import Artifact

    return Artifact(str(path))


def read_npz(path, wanted, **options):
    """See `edgec_runtime.npz.read_npz`."""
    from edgec_runtime.npz import read_npz as _read_npz

    return _read_npz(path, wanted, **options)


__all__ = ["ArtifactError", "InputError", "ModelLoadError", "NotRunnableHere", "RuntimeFailure",
           "__version__", "load", "read_npz"]
