"""Pipeline text parses and prints back identically; syntax errors point at the offending character."""

import pytest
from hypothesis import given, settings, strategies as st

from edgec.passmgr.pipeline import PipelineSyntaxError, parse_pipeline


@pytest.mark.parametrize("text", [
    "fold-constants",
    "fold-constants,dce,fuse{patterns=conv-bn}",
    "fold-constants,dce,fuse{patterns=conv-bn,matmul-add max-iterations=3}",
    "fixed-point(cse,dce)",
    "fixed-point{max-iterations=4}(fold-constants,fixed-point(cse,dce)),infer-shapes",
    'quantize{precision=int8 note="a b, {c}"}',
    "",
])
def test_round_trip_is_identical(text):
    assert str(parse_pipeline(text)) == text


def test_whitespace_between_elements_is_normalised():
    assert str(parse_pipeline(" fold-constants , dce ,fuse{ a=1  b=2 } ")) == \
        "fold-constants,dce,fuse{a=1 b=2}"


def test_structure():
    p = parse_pipeline("a,fixed-point{max-iterations=2}(b{x=1,2},c)")
    assert [e.name for e in p] == ["a", "fixed-point"]
    group = p.elements[1]
    assert group.is_group and group.option("max-iterations") == "2"
    assert group.children.elements[0].option("x") == "1,2"
    assert p.pass_names() == ["a", "b", "c"]


def test_quoted_value_is_unquoted():
    p = parse_pipeline('x{s="hello world"}')
    assert p.elements[0].option("s") == "hello world"


@pytest.mark.parametrize("text,offset,message", [
    ("a,,b", 2, "expected a pass name"),
    ("a,", 2, "expected a pass name, found the end"),
    ("fuse{patterns}", 13, "expected '='"),
    ("fuse{patterns=a", 15, "expected '}'"),
    ("fixed-point(a,b", 15, "expected ')'"),
    ("fixed-point", 11, "needs a nested pipeline"),
    ("dce(a)", 0, "is not a group"),
    ("a{x=1 x=2}", 6, "given twice"),
    ('a{x="unterminated}', 4, "unterminated string"),
    ("a b", 2, "unexpected 'b'"),
])
def test_syntax_errors_have_offsets(text, offset, message):
    with pytest.raises(PipelineSyntaxError) as info:
        parse_pipeline(text)
    assert message in info.value.message
    assert info.value.offset == offset


_names = st.from_regex(r"[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,5}){0,2}", fullmatch=True)
_values = st.one_of(st.from_regex(r"[a-z0-9.+\-]{1,8}(,[a-z0-9.]{1,5}){0,2}", fullmatch=True),
                    st.from_regex(r'"[a-z ,{}()]{0,10}"', fullmatch=True))


@st.composite
def _pipelines(draw, depth=0):
    elements = []
    for _ in range(draw(st.integers(1, 3))):
        keys = draw(st.lists(_names, max_size=3, unique=True))
        opts = " ".join(f"{k}={draw(_values)}" for k in keys)
        text = draw(_names) if depth or not draw(st.booleans()) else "fixed-point"
        if text == "fixed-point":
            text += (f"{{{opts}}}" if opts else "") + f"({draw(_pipelines(depth + 1))})"
        else:
            text += f"{{{opts}}}" if opts else ""
        elements.append(text)
    return ",".join(elements)


@settings(max_examples=300, deadline=None)
@given(_pipelines())
def test_generated_pipelines_round_trip(text):
    assert str(parse_pipeline(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab-{}()=,\" x1", max_size=30))
def test_garbage_never_crashes(text):
    try:
        parse_pipeline(text)
    except PipelineSyntaxError as e:
        assert 0 <= e.offset <= len(text)


def test_with_options_sets_options_on_every_invocation_nested_ones_included():
    pipeline = parse_pipeline("fuse,fixed-point(cse,fuse{patterns=conv-bn exclude=x}),dce")
    edited = pipeline.with_options("fuse", {"exclude": "attention"})
    assert str(edited) == ("fuse{exclude=attention},fixed-point(cse,fuse{patterns=conv-bn "
                           "exclude=attention}),dce")
    assert str(pipeline) == "fuse,fixed-point(cse,fuse{patterns=conv-bn exclude=x}),dce"


def test_edited_option_values_are_quoted_when_they_must_be_and_round_trip():
    edited = parse_pipeline("a").with_options("a", {"note": 'two words {and "quotes"}'})
    assert str(edited) == 'a{note="two words {and \\"quotes\\"}"}'
    [invocation] = parse_pipeline(str(edited))
    assert invocation.option("note") == 'two words {and "quotes"}'


def test_then_appends_passes():
    assert str(parse_pipeline("fixed-point(cse,dce)").then("a", "b")) == "fixed-point(cse,dce),a,b"
    assert str(parse_pipeline("").then("a")) == "a"


def test_default_pipeline_for_a_consumer_edits_the_parsed_default(registry):
    from edgec.passmgr import DEFAULT_PIPELINE, default_pipeline

    assert default_pipeline() == DEFAULT_PIPELINE
    text = default_pipeline({"fuse": {"exclude": "attention"}}, ("count-nodes", "not-installed"),
                            registry=registry)
    assert text == DEFAULT_PIPELINE.replace(",fuse,", ",fuse{exclude=attention},") + ",count-nodes"
