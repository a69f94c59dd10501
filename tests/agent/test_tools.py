"""Namespaced tool names and argument checks (pure functions)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.agent.tools import (
    TOOL_NAME_PATTERN,
    ArgumentError,
    ToolTable,
    make_tool_spec,
    parse_arguments,
    public_tool_name,
)

SCHEMA = {
    "type": "object",
    "properties": {"path": {"type": "string"}, "count": {"type": "integer", "minimum": 1}},
    "required": ["path"],
}


def test_plain_names_are_server_double_underscore_tool() -> None:
    assert public_tool_name("notes", "read") == "notes__read"
    assert public_tool_name("my-calc", "add_2") == "my-calc__add_2"


def test_unsafe_or_long_names_are_sanitised_and_disambiguated() -> None:
    a, b = public_tool_name("my.server", "read"), public_tool_name("my_server", "read")
    assert TOOL_NAME_PATTERN.match(a) and a != b
    long = public_tool_name("s" * 50, "t" * 50)
    assert len(long) == 64 and TOOL_NAME_PATTERN.match(long)


@given(st.text(min_size=1, max_size=80), st.text(min_size=1, max_size=80))
def test_public_names_always_fit_openai_rules(server: str, tool: str) -> None:
    name = public_tool_name(server, tool)
    assert TOOL_NAME_PATTERN.match(name)
    assert name == public_tool_name(server, tool)


@given(st.lists(st.tuples(st.text(min_size=1, max_size=70), st.text(min_size=1, max_size=70)),
                unique=True, max_size=12))
def test_table_names_are_unique_and_route_back(pairs: list[tuple[str, str]]) -> None:
    table = ToolTable()
    specs = [table.add(make_tool_spec(s, t, None, None)) for s, t in pairs]
    assert len({spec.public_name for spec in specs}) == len(pairs)
    for (server, tool), spec in zip(pairs, specs, strict=True):
        found = table.get(spec.public_name)
        assert found is not None and (found.server, found.name) == (server, tool)
        assert TOOL_NAME_PATTERN.match(spec.public_name)


def test_openai_schema_shape() -> None:
    spec = make_tool_spec("notes", "read", "Read a note.", SCHEMA)
    assert spec.openai_schema() == {
        "type": "function",
        "function": {"name": "notes__read", "description": "[notes] Read a note.",
                     "parameters": SCHEMA},
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"count": 2}', "'path' is a required property"),
        ('{"path": 5}', "path: 5 is not of type 'string'"),
        ('{"path": "a", "count": 0}', "count: 0 is less than the minimum of 1"),
        ("{not json", "not valid JSON"),
        ('["a"]', "must be a JSON object, got list"),
    ],
)
def test_bad_arguments_are_explained(raw: str, message: str) -> None:
    spec = make_tool_spec("notes", "read", None, SCHEMA)
    with pytest.raises(ArgumentError, match="notes__read") as info:
        parse_arguments(spec, raw)
    assert message in str(info.value)


def test_good_and_empty_arguments() -> None:
    spec = make_tool_spec("notes", "read", None, SCHEMA)
    assert parse_arguments(spec, '{"path": "a.txt", "count": 3}') == {"path": "a.txt", "count": 3}
    free = make_tool_spec("x", "y", None, None)
    assert parse_arguments(free, "") == {} and parse_arguments(free, "  ") == {}


def test_invalid_schema_from_server_is_noted_not_fatal() -> None:
    spec = make_tool_spec("x", "y", None, {"type": "object", "properties": {"a": {"type": 7}}})
    assert spec.validator is None and spec.schema_problem is not None
    assert parse_arguments(spec, '{"a": 1}') == {"a": 1}
