"""Meaning: units, defaults, includes, targets, metrics, pipelines."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgec.diagnostics import SpecError
from edgec.dsl import Quantity, check_text, load_spec
from edgec.dsl import catalogue as catalogue_module
from edgec.dsl import semantic
from edgec.dsl.units import UnitError

EXAMPLES = Path(__file__).resolve().parents[2] / "spec_examples"


def errors(text: str, path: str = "<spec>") -> list[str]:
    spec, diagnostics = check_text(text, path)
    return [f"{d.location.line}:{d.location.column} {d.message}"
            for d in diagnostics if d.is_error]


def resolved(text: str, path: str = "<spec>"):
    spec, diagnostics = check_text(text, path)
    assert spec is not None, "\n".join(d.render() for d in diagnostics)
    return spec


def test_quantity_conversions():
    assert Quantity(15, "ms").to("s") == pytest.approx(0.015)
    assert Quantity(1, "GiB").to("MiB") == 1024
    assert Quantity(1, "GB").base == 1e9
    assert Quantity(50, "%").base == 0.5
    with pytest.raises(UnitError):
        Quantity(1, "ms").to("MiB")
    with pytest.raises(UnitError):
        Quantity(1, "parsecs")


def test_units_are_checked_by_dimension():
    assert errors("target host\nbudget {\n  latency < 15 MiB\n}\n") == [
        "3:16 a latency needs a time (ns, us, ms, s, min, h), not 'MiB' (size)"]
    assert errors("target host\nbudget {\n  size < 15 ms\n}\n")[0].startswith(
        "3:13 an artifact size needs a size")
    assert errors("target host\nbudget {\n  latency < 15\n}\n") == [
        "3:13 a latency needs a time (ns, us, ms, s, min, h), not a plain number"]
    assert errors("target host { clock 2 GB/s }\n")[0].startswith("1:23 a clock needs a frequency")


def test_misspelled_unit_suggests_one_of_the_right_dimension():
    assert errors("target host\nbudget {\n  memory < 1 mib\n}\n") == [
        "3:14 unknown unit 'mib'; did you mean 'MiB'?"]


def test_defaults_are_filled_in():
    spec = resolved("target x86-64-v3\n")
    assert spec.budget.latency is None
    assert spec.accuracy.metric == "top1-agreement"
    assert spec.accuracy.tolerance == Quantity(1, "%")
    assert spec.optimize.precisions == ("fp32",)
    assert spec.optimize.backend == "auto" and spec.optimize.seed == 0
    assert spec.optimize.pruning.sparsity is None and spec.optimize.tuning.trials is None


def test_latency_budget():
    spec = resolved("target host\nbudget { latency < 15 ms p90 at batch 8 }\n")
    assert spec.budget.latency.seconds == pytest.approx(0.015)
    assert (spec.budget.latency.percentile, spec.budget.latency.batch) == (90, 8)
    assert errors("target host\nbudget { latency < 15 ms at batch 0 }\n") == [
        "2:35 a batch size must be at least 1"]


def test_canonical_example():
    spec = load_spec(EXAMPLES / "jetson.edge")
    assert spec.target.name == "jetson-orin-nano"
    assert spec.target.accelerator.arch == "sm_87"
    assert spec.budget.latency.limit == Quantity(15, "ms")
    assert spec.accuracy.tolerance.base == pytest.approx(0.01)
    assert "int8" in spec.optimize.precisions
    assert spec.accuracy.data == str((EXAMPLES / "data" / "digits.npz").resolve())
    from edgec.backends.tvm import target_dict  # the TVM backend translates the target

    assert target_dict(spec.target) == {
        "kind": "cuda", "arch": "sm_87",
        "host": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "num-cores": 6,
                 "mcpu": "cortex-a78", "mattr": ["+neon", "+fullfp16", "+dotprod"]}}


def test_include_merges_and_later_values_win():
    spec = load_spec(EXAMPLES / "include.edge")
    assert spec.target.name == "raspberry-pi-5"          # from the base
    assert spec.budget.latency.limit == Quantity(10, "ms")  # overridden
    assert spec.budget.memory == Quantity(1, "GiB")        # kept from the base
    assert spec.accuracy.metric == "accuracy"
    assert spec.optimize.seed == 42
    assert [p.rsplit("/", 1)[-1] for p in spec.sources] == ["include.edge", "team-base.edge"]


def test_include_cycle_through_three_files(tmp_path):
    (tmp_path / "a.edge").write_text('include "b.edge"\n')
    (tmp_path / "b.edge").write_text('include "sub/c.edge"\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.edge").write_text('include "../a.edge"\n')
    with pytest.raises(SpecError) as error:
        load_spec(tmp_path / "a.edge")
    [diagnostic] = error.value.diagnostics
    assert diagnostic.message == "include cycle: a.edge -> b.edge -> c.edge -> a.edge"
    assert diagnostic.location.path.endswith("c.edge")


def test_errors_in_an_included_file_point_into_it(tmp_path):
    (tmp_path / "base.edge").write_text("target host\nbudget {\n  latency < 1 GiB\n}\n")
    (tmp_path / "main.edge").write_text('include "base.edge"\n')
    with pytest.raises(SpecError) as error:
        load_spec(tmp_path / "main.edge")
    [diagnostic] = error.value.diagnostics
    assert diagnostic.location.path.endswith("base.edge") and diagnostic.location.line == 3


def test_target_with_overrides_and_inline_target():
    spec = resolved("target jetson-orin-nano { memory 4 GiB; name nano-4g }\n")
    assert spec.target.memory == Quantity(4, "GiB") and spec.target.name == "nano-4g"
    assert spec.target.cores == 6                       # kept from the catalogue
    spec = resolved("target { arch armv7; cores 2 }\n")
    assert spec.target.triple == "armv7l-linux-gnueabihf" and spec.target.float_abi == "hard"
    from edgec.backends.tvm import target_dict

    assert target_dict(spec.target)["mfloat-abi"] == "hard"


def test_unknown_names_get_a_did_you_mean():
    assert errors("target rasberry-pi-5\n") == [
        "1:8 unknown target 'rasberry-pi-5'; did you mean 'raspberry-pi-5'?"]
    assert errors("target { arch aarch46; cores 1 }\n") == [
        "1:15 unknown arch 'aarch46'; did you mean 'aarch64'?"]
    assert errors("target host\naccuracy { metric cosine }\n") == [
        "2:19 unknown metric 'cosine'; did you mean 'cosine-similarity'?"]
    # Backends are the registry's (edgec.backends entry points), plugins included.
    assert errors("target host\noptimize { backend tvn }\n") == [
        "2:20 unknown backend 'tvn'; did you mean 'tvm'?"]


def test_tolerance_must_fit_the_metric():
    assert errors("target host\naccuracy { metric sqnr; tolerance 25 dB }\n") == []
    assert errors("target host\naccuracy { metric top1-agreement; tolerance 3 dB }\n") == [
        "2:35 a top1-agreement tolerance is a drop in % (e.g. '1 %') or a fraction, not dB"]
    assert errors("target host\naccuracy { tolerance 150 % }\n")[0].startswith(
        "2:12 a top1-agreement drop lies between 0 and 100 %")
    spec = resolved("target host\naccuracy { metric max-abs-error; tolerance 0.01 }\n")
    assert spec.accuracy.tolerance == Quantity(0.01)


def test_tuning_and_pruning():
    spec = resolved("target host\noptimize { tuning 64 trials, 10 min; prune 0.5 unstructured }\n")
    assert spec.optimize.tuning.trials == 64
    assert spec.optimize.tuning.wall_time.to("s") == 600
    assert spec.optimize.pruning.fraction == 0.5 and not spec.optimize.pruning.structured
    assert errors("target host\noptimize { tuning 2.5 trials }\n") == [
        "2:19 a number of trials must be a whole number, got 2.5"]


def test_pipeline_is_checked_against_the_pass_registry():
    assert errors('target host\noptimize { pipeline "cse,dce" }\n') == []
    found = errors('target host\noptimize { pipeline "cse,,dce" }\n')
    assert len(found) == 1 and found[0].startswith("2:26 pass pipeline:")


def test_pipeline_options_are_checked_by_constructing_the_passes():
    # The string starts at column 22: each error points at its option or pass in it.
    assert errors('target host\noptimize { pipeline "cse{bogus=1}" }\n') == [
        "2:26 pass 'cse' has no option 'bogus'"]
    assert errors('target host\noptimize { pipeline "prune-channels{criterion=l3}" }\n') == [
        "2:37 option 'criterion' of pass 'prune-channels': expected one of l1, l2, got 'l3'"]
    assert errors('target host\noptimize { pipeline "fuse{patterns=conv-bn raise-opset=x}" }\n') == [
        "2:44 option 'raise-opset' of pass 'fuse': expected an integer, got 'x'"]


def test_every_bad_pass_of_a_pipeline_is_reported_with_a_caret():
    text = 'target host\noptimize { pipeline "fixed-point(csee,dce),quantize-int8{fallback=x}" }\n'
    spec, diagnostics = check_text(text)
    assert spec is None
    assert [(d.location.column, d.code) for d in diagnostics] == [
        (34, "spec.unknown-pass"), (58, "spec.pipeline")]
    assert diagnostics[0].message == "unknown pass 'csee'; did you mean 'cse'?"
    assert diagnostics[0].render().splitlines()[-2].endswith("^~~~")


def test_repeated_setting_in_one_file_warns():
    spec, diagnostics = check_text("target host\nbudget { size < 1 MB; size < 2 MB }\n")
    assert spec.budget.size == Quantity(2, "MB")
    assert [d.code for d in diagnostics] == ["spec.repeated"]


def test_missing_data_is_a_warning_not_an_error(tmp_path):
    spec, diagnostics = check_text('target host\naccuracy { data "nothing/*.npz" }\n',
                                   str(tmp_path / "s.edge"))
    assert spec is not None
    assert [d.code for d in diagnostics] == ["spec.data-missing"]
    assert spec.accuracy.data == str(tmp_path / "nothing" / "*.npz")


def test_host_target_is_detected():
    spec = resolved("target host\n")
    assert spec.target.cores >= 1 and spec.target.arch in ("x86_64", "aarch64", "armv7")
    assert spec.target.triple.startswith(spec.target.arch.replace("armv7", "armv7l"))
    assert resolved(spec.to_text()) == spec


def test_no_target_means_host():
    assert resolved("budget { size < 1 MB }\n").target.name == "host"


class _EntryPoint:
    def __init__(self, name, value, loaded):
        self.name, self.value, self._loaded = name, value, loaded
        self.dist = None

    def load(self):
        if isinstance(self._loaded, Exception):
            raise self._loaded
        return self._loaded


@pytest.fixture
def plugins(monkeypatch):
    """Install fake entry points for targets and metrics."""
    groups: dict[str, list] = {"edgec.targets": [], "edgec.metrics": []}

    def entry_points(group=None):
        return list(groups.get(group, []))

    monkeypatch.setattr(catalogue_module.metadata, "entry_points", entry_points)
    catalogue_module.target_catalogue.cache_clear()
    semantic.metric_names.cache_clear()
    yield groups
    catalogue_module.target_catalogue.cache_clear()
    semantic.metric_names.cache_clear()


def test_plugin_targets_and_metrics(plugins, tmp_path):
    board = tmp_path / "board.edge"
    board.write_text("target generic-aarch64 { name my-board; cores 2 }\n")
    plugins["edgec.targets"] += [
        _EntryPoint("my-board", "pkg:board", lambda: board),
        _EntryPoint("text-board", "pkg:text", "target { name text-board; arch x86_64; cores 3 }"),
        _EntryPoint("broken-board", "pkg:broken", ImportError("no module named pkg")),
        _EntryPoint("wrong-type", "pkg:wrong", 42),
        _EntryPoint("host", "pkg:host", "target { name host; arch x86_64; cores 1 }"),
    ]
    plugins["edgec.metrics"].append(_EntryPoint("psnr", "pkg:psnr", object()))
    assert resolved("target my-board\n").target.cores == 2
    assert resolved("target text-board\n").target.cores == 3
    assert "failed to load: ImportError" in errors("target broken-board\n")[0]
    assert "gave a int" in errors("target wrong-type\n")[0]
    assert errors("target host\n")[0].startswith("1:8 target 'host' is defined more than once")
    assert resolved("target x86-64-v3\naccuracy { metric psnr; tolerance 40 dB }\n"
                    ).accuracy.metric == "psnr"
    assert "has no default tolerance" in errors("target x86-64-v3\naccuracy { metric psnr }\n")[0]


def test_launch_cost_is_a_time_and_prints_back():
    spec = resolved("target jetson-orin-nano { launch 7 us }\n")
    assert spec.target.launch == Quantity(7, "us")
    assert "  launch 7 us\n" in spec.to_text()
    assert resolved(spec.to_text()) == spec
    assert resolved("target jetson-orin-nano\n").target.launch is None  # the model's default
    assert errors("target jetson-orin-nano { launch 7 GB }\n") == [
        "1:36 a launch cost needs a time (ns, us, ms, s, min, h), not 'GB' (size)"]
