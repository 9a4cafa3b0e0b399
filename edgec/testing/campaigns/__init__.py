"""Robustness campaigns: many hostile inputs against the CLI, each a documented command
with a bounded, deterministic sample that the test suite runs.

    python3 -m edgec.testing.campaigns onnx --count 10000 [--jobs 2] [--seed 0]
    python3 -m edgec.testing.campaigns npz --count 10000 [--seed 0]

Each campaign is a module here exposing ``NAME``, ``add_arguments(parser)`` and
``run(args) -> int`` (0 when every case passed); `CAMPAIGNS` lists them. The shared
machinery (`run_cases`: a forked child per case, under a memory limit and a timeout,
classified by how it ended) lives in `edgec.testing.campaigns.harness`.
"""

from __future__ import annotations

CAMPAIGNS = {
    "onnx": "edgec.testing.campaigns.onnx_models",
    "npz": "edgec.testing.campaigns.npz_files",
}
