"""ONNX in and out of the IR: `load_model`/`import_model` and `save_model`/`export_model`."""

from edgec.frontend.onnx_export import export_model, save_model
from edgec.frontend.onnx_import import import_model, load_model, parse_model_bytes

__all__ = ["export_model", "import_model", "load_model", "parse_model_bytes", "save_model"]
