"""The pass manager: options, fixed points, verification, failures reported with context."""

import os

import pytest

from edgec.diagnostics import UsageError
from edgec.passmgr import InternalError, PassManager
from edgec.passmgr.instruments import stats_json, stats_table, timing_table


def test_options_are_converted_to_their_types(registry):
    pm = PassManager("count-nodes{scale=3 tags=a,b ratio=0.25 strict=true}", registry=registry)
    p = pm._instance(pm.pipeline.elements[0])
    assert (p.scale, p.tags, p.ratio, p.strict) == (3, ("a", "b"), 0.25, True)


@pytest.mark.parametrize("text,message,column", [
    ("count-nodez", "unknown pass 'count-nodez'", 1),
    ("count-nodes{scal=2}", "has no option 'scal'", 13),
    ("count-nodes{scale=two}", "expected an integer", 13),
    ("count-nodes{strict=maybe}", "expected true or false", 13),
    ("fixed-point{max-iterations=0}(count-nodes)", "positive integer", 13),
    ("count-nodes,,", "invalid pipeline", 13),
])
def test_bad_pipelines_are_usage_errors_pointing_into_the_text(registry, text, message, column):
    with pytest.raises(UsageError) as info:
        PassManager(text, registry=registry)
    d = info.value.diagnostics[0]
    assert message in d.message
    assert d.location.column == column
    assert "^" in d.render()


def test_unknown_pass_suggests_the_closest(registry):
    with pytest.raises(UsageError) as info:
        PassManager("drop-one-identiy", registry=registry)
    assert "did you mean 'drop-one-identity'?" in info.value.diagnostics[0].notes


def test_fixed_point_repeats_until_nothing_changes(registry, chain_model):
    run = PassManager("fixed-point(drop-one-identity,count-nodes)", registry=registry,
                      verify_each=True).run(chain_model)
    assert [n.op_type for n in chain_model.graph] == ["Relu"]
    drops = [r for r in run.records if r.name == "drop-one-identity"]
    assert [r.modified for r in drops] == [True, True, True, False]
    assert [r.iteration for r in drops] == [1, 2, 3, 4]


def test_fixed_point_limit_warns(registry, chain_model):
    pm = PassManager("fixed-point{max-iterations=2}(drop-one-identity)", registry=registry)
    pm.run(chain_model)
    assert len(chain_model.graph) == 2
    assert "did not reach a fixed point in 2 iterations" in \
        pm.context.diagnostics.diagnostics[0].message


def test_verify_each_catches_a_pass_that_breaks_the_ir(registry, chain_model, tmp_path):
    pm = PassManager("count-nodes,break-ir", registry=registry, verify_each=True,
                     reproducer_dir=str(tmp_path))
    with pytest.raises(InternalError) as info:
        pm.run(chain_model)
    d = info.value.diagnostics[0]
    assert "internal error in pass 'break-ir'" in d.message
    assert "ghost" in d.message
    assert "while running 'break-ir' (after count-nodes)" in d.notes


def test_a_crashing_pass_writes_a_reproducer(registry, chain_model, tmp_path):
    pm = PassManager("drop-one-identity,count-nodes{scale=2},crash", registry=registry,
                     reproducer_dir=str(tmp_path))
    with pytest.raises(InternalError) as info:
        pm.run(chain_model)
    d = info.value.diagnostics[0]
    assert "RuntimeError: boom" in d.message
    assert "while running 'crash' (after drop-one-identity, count-nodes{scale=2})" in d.notes
    [repro] = os.listdir(tmp_path)
    files = set(os.listdir(tmp_path / repro))
    assert {"input.onnx", "pipeline.txt", "command.sh", "error.txt"} <= files
    assert (tmp_path / repro / "pipeline.txt").read_text().strip() == \
        "drop-one-identity,count-nodes{scale=2},crash"
    assert "Traceback" in (tmp_path / repro / "error.txt").read_text()
    # The reproducer holds the model as it entered the pipeline: three Identity nodes.
    from edgec.frontend import load_model
    replay = load_model(str(tmp_path / repro / "input.onnx"))
    assert [n.op_type for n in replay.graph].count("Identity") == 3


def test_reports(registry, chain_model):
    run = PassManager("count-nodes{scale=2},count-nodes", registry=registry).run(chain_model)
    assert "count-nodes - nodes" in stats_table(run.records)
    assert " 12 count-nodes - nodes" in stats_table(run.records)
    assert '"nodes": 12' in stats_json(run.records)
    assert "Pass execution timing report" in timing_table(run.records)
