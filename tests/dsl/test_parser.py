"""The grammar and the parser's error recovery."""

from __future__ import annotations

from edgec.dsl import ast
from edgec.dsl.parser import parse_text


def messages(text: str) -> list[str]:
    return [f"{d.location.line}:{d.location.column} {d.message}"
            for d in parse_text(text, "t.edge").diagnostics]


def test_every_statement_form_parses():
    text = """
include "base.edge"
target jetson-orin-nano { memory 4 GiB; clock 1 GHz }
budget { latency < 15 ms p90 at batch 4; memory <= 1 GiB; size < 20MB }
accuracy {
  metric sqnr
  tolerance 30 dB
  data "data/*.npz"
  labels none
}
optimize {
  precision fp32, fp16, int8
  fallback none
  prune up to 50 % unstructured
  tuning 64 trials, 10 min
  backend tvm
  pipeline "cse,dce"
  seed 7
}
target {
  name board
  arch armv7
  features "+neon", "+vfp4"
  float-abi hard
  cores 4
  accelerator cuda { arch sm_87; sm-count 8 }
  peak int8 20 TOPS
  fast-precisions int8
}
"""
    result = parse_text(text, "t.edge")
    assert result.ok, [d.render() for d in result.diagnostics]
    kinds = [type(s).__name__ for s in result.spec_file.statements]
    assert kinds == ["Include", "TargetStatement", "Block", "Block", "Block", "TargetStatement"]
    budget = result.spec_file.statements[2]
    latency = budget.fields[0]
    assert latency.key == "latency"
    assert latency.values[0] == ast.QuantityLiteral(15.0, ast.Word("ms"), "15 ms")
    assert latency.values[1] == ast.Word("p90")
    assert budget.fields[2].values[0].unit == ast.Word("MB")  # "20MB" without a space


def test_positions_are_one_based_and_point_at_the_value():
    result = parse_text("target host\nbudget {\n  latency < 15 ms\n}\n", "t.edge")
    field = result.spec_file.statements[1].fields[0]
    assert (field.span.line, field.span.column) == (3, 3)
    quantity = field.values[0]
    assert (quantity.span.line, quantity.span.column) == (3, 13)
    assert (quantity.unit.span.line, quantity.unit.span.column) == (3, 16)


def test_spans_do_not_take_part_in_equality():
    a = parse_text("target host\n", "a.edge").spec_file.statements
    b = parse_text("\n\n   target    host   # here\n", "b.edge").spec_file.statements
    assert a == b


def test_comments_blank_lines_and_semicolons():
    result = parse_text("# top\n\n  # indented\ntarget host ; budget { size < 1 MB } # end", "t")
    assert result.ok
    assert len(result.spec_file.statements) == 2


def test_several_errors_in_one_file_are_all_reported():
    text = ("budget {\n  latncy < 15 ms\n  memory = 3 MiB\n  size < MiB\n}\n"
            "budgt {\n latency < 1 ms\n}\ntarget \"host\"\n")
    assert messages(text) == [
        "2:3 unknown keyword 'latncy'; did you mean 'latency'?",
        "3:10 no '=' between a keyword and its value: write 'latency < 15 ms', "
        "'target host', 'metric sqnr'",
        "4:10 expected a number before 'MiB' (for example '15 ms')",
        "6:1 unknown keyword 'budgt'; did you mean 'budget'?",
        '9:8 names are written without quotes: write host rather than "host"',
    ]


def test_recovery_keeps_the_statements_around_an_error():
    text = "target host\nbudget {\n  latency < ms\n  size < 1 MB\n}\noptimize { seed 3 }\n"
    result = parse_text(text, "t")
    assert len(result.diagnostics) == 1
    statements = result.spec_file.statements
    assert [type(s).__name__ for s in statements] == ["TargetStatement", "Block", "Block"]
    assert [f.key for f in statements[1].fields] == ["size"]


def test_a_misspelled_block_costs_one_error_not_one_per_line():
    text = "optimise {\n  seed 1\n  backend tvm\n}\ntarget host\n"
    assert messages(text) == ["1:1 unknown keyword 'optimise'; did you mean 'optimize'?"]


def test_unclosed_block_points_at_its_brace_and_keeps_its_fields():
    result = parse_text("target host\nbudget {\n  latency < 15 ms\n", "t")
    assert [d.message for d in result.diagnostics] == ["this '{' is never closed"]
    assert (result.diagnostics[0].location.line, result.diagnostics[0].location.column) == (2, 8)
    assert result.spec_file.statements[1].fields[0].key == "latency"


def test_stray_closing_brace():
    assert messages("target host\n}\nbudget { size < 1 MB }\n") == [
        "2:1 '}' without a matching '{'"]


def test_unclosed_string_and_odd_characters():
    assert messages('accuracy {\n  data "x.npz\n}\n@\n') == [
        "2:8 this string is not closed on its line", "4:1 unexpected character '@'"]


def test_unquoted_path_is_a_named_error():
    assert messages("accuracy {\n  data digits.npz\n}\n") == [
        '2:8 this is written in double quotes: "digits.npz"']


def test_error_renders_with_a_caret_and_what_was_expected():
    diagnostic = parse_text("budget {\n  latncy < 15 ms\n}\n", "t.edge").diagnostics[0]
    assert diagnostic.render() == (
        "t.edge:2:3: error: unknown keyword 'latncy'; did you mean 'latency'?\n"
        "    latncy < 15 ms\n"
        "    ^~~~~~\n"
        "note: expected 'latency', 'memory', 'size' or '}'")


def test_string_escapes():
    result = parse_text('target { name b; arch x86_64; cores 1; summary "a \\"b\\" c:\\\\d\\q" }', "t")
    assert result.ok
    summary = result.spec_file.statements[0].body.fields[3].values[0].value
    assert summary == 'a "b" c:\\d\\q'


def test_non_utf8_file(tmp_path):
    from edgec.dsl.parser import parse_file
    path = tmp_path / "bad.edge"
    path.write_bytes(b"target host\n\xff\xfe\n")
    result = parse_file(path)
    assert [(d.location.line, d.code) for d in result.diagnostics] == [(2, "spec.encoding")]
