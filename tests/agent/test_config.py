"""The .mcp.json parser: valid files load, every malformed one names the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.agent import (
    HttpServer,
    McpConfigError,
    StdioServer,
    UnknownServerError,
    load_mcp_config,
    parse_mcp_config,
)


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / ".mcp.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_loads_stdio_and_http_servers(tmp_path: Path) -> None:
    path = write(tmp_path, {"mcpServers": {
        "notes": {"command": "python", "args": ["n.py", "--root", "${ROOT}"], "env": {"K": "v"},
                  "cwd": "/tmp"},
        "calc": {"type": "http", "url": "http://127.0.0.1:9/mcp", "headers": {"X-Key": "k"}},
    }})
    config = load_mcp_config(path, environ={"ROOT": "/data"})
    notes, calc = config.servers["notes"], config.servers["calc"]
    assert isinstance(notes, StdioServer) and isinstance(calc, HttpServer)
    assert notes.args == ("n.py", "--root", "/data")
    assert notes.env["K"].get_secret_value() == "v"
    assert calc.headers["X-Key"].get_secret_value() == "k"
    assert list(config.select()) == ["notes", "calc"]


def test_secrets_never_appear_in_repr() -> None:
    config = parse_mcp_config({"mcpServers": {
        "a": {"command": "x", "env": {"TOKEN": "sk-secret-1"}},
        "b": {"url": "https://h/mcp", "headers": {"Authorization": "Bearer sk-secret-2"}},
    }})
    assert "sk-secret" not in repr(config) and "sk-secret" not in str(config.model_dump())


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        ({"servers": {}}, "mcpServers", "missing"),
        ({"mcpServers": []}, "mcpServers", "dictionary"),
        ({"mcpServers": {"a": {"args": ["x"]}}}, "mcpServers.a", "exactly one of 'command'"),
        ({"mcpServers": {"a": {"command": "x", "url": "http://h"}}}, "mcpServers.a", "exactly one"),
        ({"mcpServers": {"a": {"command": "x", "args": ["ok", 3]}}}, "mcpServers.a.args[1]",
         "string"),
        ({"mcpServers": {"a": {"command": "x", "comand": "y"}}}, "mcpServers.a.comand",
         "Extra inputs"),
        ({"mcpServers": {"a": {"command": ""}}}, "mcpServers.a.command", "at least 1"),
        ({"mcpServers": {"a": {"url": "ftp://h/mcp"}}}, "mcpServers.a.url", "http"),
        ({"mcpServers": {"a": {"command": "${NOT_SET_ANYWHERE}"}}}, "mcpServers.a.command",
         "NOT_SET_ANYWHERE is not set"),
        ({"mcpServers": {"a": {"command": "x", "env": {"K": 1}}}}, "mcpServers.a.env.K", "string"),
    ],
)
def test_malformed_config_names_file_and_field(
    tmp_path: Path, data: object, field: str, problem: str
) -> None:
    path = write(tmp_path, data)
    with pytest.raises(McpConfigError) as info:
        load_mcp_config(path, environ={})
    assert info.value.path == str(path) and info.value.field == field
    assert problem in info.value.problem
    assert str(path) in str(info.value) and field in str(info.value)


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '{"mcpServers": {\n  "a": {"command": "x",}\n}}')
    with pytest.raises(McpConfigError, match=r"\.mcp\.json: not valid JSON: .* line 2 column"):
        load_mcp_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(McpConfigError, match="cannot read file"):
        load_mcp_config(tmp_path / "nope.json")


def test_unknown_server_lists_the_defined_ones(tmp_path: Path) -> None:
    config = load_mcp_config(write(tmp_path, {"mcpServers": {"a": {"command": "x"},
                                                              "b": {"command": "y"}}}))
    with pytest.raises(UnknownServerError) as info:
        config.select(["a", "c"])
    assert info.value.name == "c" and info.value.known == ["a", "b"]
    assert "mcpServers.c" in str(info.value) and "'a', 'b'" in str(info.value)


def test_disabled_servers_are_skipped_unless_named() -> None:
    config = parse_mcp_config({"mcpServers": {"a": {"command": "x", "disabled": True},
                                              "b": {"command": "y"}}})
    assert list(config.select()) == ["b"]
    assert list(config.select(["a"])) == ["a"]


names = st.text(min_size=1,
                max_size=20).filter(lambda s: s.strip() != "" and "${" not in s)
plain = st.text(max_size=20).filter(lambda s: "${" not in s)


@given(st.dictionaries(names, st.fixed_dictionaries(
    {"command": plain.filter(bool), "args": st.lists(plain, max_size=4)}), max_size=4))
def test_valid_stdio_configs_round_trip(servers: dict[str, dict[str, object]]) -> None:
    config = parse_mcp_config({"mcpServers": servers}, environ={})
    for name, raw in servers.items():
        server = config.servers[name]
        assert isinstance(server, StdioServer)
        assert server.command == raw["command"] and list(server.args) == raw["args"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=3),
    max_leaves=12,
)


@given(json_values)
def test_arbitrary_json_either_parses_or_raises_config_error(data: object) -> None:
    try:
        parse_mcp_config(data, source="fuzz.json", environ={})
    except McpConfigError as exc:
        assert str(exc).startswith("invalid MCP config fuzz.json")


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=3))
def test_arbitrary_server_entries_parse_or_name_the_server(entry: dict[str, object]) -> None:
    try:
        parse_mcp_config({"mcpServers": {"s": entry}}, source="f.json", environ={})
    except McpConfigError as exc:
        assert exc.field is not None and exc.field.startswith("mcpServers.s")


def test_http_target_in_transcripts_hides_credentials() -> None:
    server = parse_mcp_config({"mcpServers": {
        "a": {"url": "https://user:pw@h:1/mcp?api_key=abc"}}}).servers["a"]
    assert isinstance(server, HttpServer)
    shown = server.describe()
    assert "pw" not in shown and "abc" not in shown and shown.startswith("https://h:1/mcp")
