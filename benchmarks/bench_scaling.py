"""How import -> default pipeline -> export time grows with model size (1k, 10k, 50k nodes).

    python -m pytest benchmarks/bench_scaling.py --benchmark-enable \
        --benchmark-columns=min,median,max,rounds

pyproject's pytest options disable benchmarks (``--benchmark-disable``) so that a
plain test run stays quick; ``--benchmark-enable`` turns them on. Each benchmark's
``extra_info`` holds the node count and the median time per node, so linear growth
reads off the table (``--benchmark-json out.json`` keeps it); the test also prints it
(``-s`` to see). The 10k-node model must take under 5 s (median).
"""

from __future__ import annotations

import functools

import onnx
import pytest

from edgec.frontend import export_model, import_model
from edgec.passmgr import run_pipeline
from edgec.testing.models import scaling_model

# Fewer rounds for the larger models: the 50k one takes seconds per round.
ROUNDS = {1_000: 10, 10_000: 5, 50_000: 3}
BUDGET_10K_S = 5.0


@functools.lru_cache(maxsize=None)
def _model_bytes(num_nodes: int) -> bytes:
    return scaling_model(num_nodes).SerializeToString()


def compile_once(proto: onnx.ModelProto) -> onnx.ModelProto:
    """import (checked) -> default pipeline (verified between passes) -> export."""
    model = import_model(proto, check=True)
    run_pipeline(model)
    return export_model(model)


@pytest.mark.parametrize("num_nodes", sorted(ROUNDS), ids=lambda n: f"{n // 1000}k")
def test_import_pipeline_export(benchmark, num_nodes: int) -> None:
    # The model proto is built (and parsed) outside the timed region; import does not
    # mutate it, so every round starts from the same proto.
    proto = onnx.ModelProto.FromString(_model_bytes(num_nodes))
    assert len(proto.graph.node) == num_nodes
    out = benchmark.pedantic(compile_once, args=(proto,), rounds=ROUNDS[num_nodes], iterations=1,
                             warmup_rounds=1 if num_nodes <= 10_000 else 0)
    assert len(out.graph.node) < num_nodes  # the pipeline did fold, merge and delete
    benchmark.extra_info["nodes"] = num_nodes
    benchmark.extra_info["nodes_after"] = len(out.graph.node)
    if benchmark.stats is None:  # --benchmark-disable: ran once, untimed
        return
    median = benchmark.stats.stats.median
    benchmark.extra_info["us_per_node"] = round(1e6 * median / num_nodes, 2)
    print(f"\n{num_nodes} nodes: median {median:.3f} s, {1e6 * median / num_nodes:.1f} us/node, "
          f"{len(out.graph.node)} nodes after the pipeline")
    if num_nodes == 10_000:
        assert median < BUDGET_10K_S, f"10k nodes took {median:.2f} s (median), budget {BUDGET_10K_S} s"
