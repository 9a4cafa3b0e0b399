"""edgec: an ahead-of-time compiler from ONNX models to artifacts that hold a spec's
latency budget and accuracy tolerance on edge hardware."""

from edgec._version import __version__

__all__ = ["__version__"]
