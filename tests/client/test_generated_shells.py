"""The blocking shell is generated from the asyncio one (issue 11: "if the shells must mirror
each other, generate one from the other and check it in CI"). ``harness/client/sync.py`` must
be byte for byte what ``python -m harness.client._generate`` makes of ``aio.py`` (and, checked
without unasync, token for token ``aio.py`` through the rename table); what really differs
lives in the two backend modules, which must offer the same names."""

from __future__ import annotations

import inspect
import io
import re
import tokenize
from pathlib import Path

import pytest

from harness.client import _backend_async, _backend_sync, _generate

CLIENT = Path(__file__).resolve().parents[2] / "harness" / "client"


def needs_unasync() -> None:
    """unasync is in the dev extra (CI installs it); a venv made before it joined is told what
    to do, and ``test_the_shells_differ_only_by_the_table`` still runs there."""
    pytest.importorskip("unasync", reason="pip install -e '.[dev]' (unasync writes sync.py)")


def test_sync_shell_is_what_the_generator_makes_of_aio() -> None:
    needs_unasync()
    checked_in = (CLIENT / "sync.py").read_bytes()
    assert checked_in == _generate.generate().encode("utf-8"), (
        "harness/client/sync.py is stale or was edited by hand: edit aio.py, then run "
        "python -m harness.client._generate")


def _code(source: str, renames: dict[str, str] | None = None) -> list[str]:
    """The code tokens of ``source`` (no comments, no layout); with ``renames``, as unasync
    rewrites them: ``async``/``await`` dropped, names renamed."""
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                        tokenize.DEDENT):
            continue
        text = tok.string
        if renames is not None and tok.type == tokenize.NAME:
            if text in ("async", "await"):
                continue
            text = renames.get(text, text)
        out.append(text)
    return out


def test_the_shells_differ_only_by_the_table() -> None:
    """Without unasync: token for token, ``sync.py`` is ``aio.py`` through ``RENAMES`` (so a
    hand edit of either file fails in any venv), and the table holds no dead row."""
    source, generated = (CLIENT / "aio.py").read_text(), (CLIENT / "sync.py").read_text()
    assert _code(generated) == _code(source, _generate.RENAMES)
    assert set(_generate.RENAMES) <= set(_code(source)), "a row of RENAMES renames nothing"


def test_generated_shell_says_where_it_comes_from() -> None:
    head = (CLIENT / "sync.py").read_text().splitlines()[0]
    assert "Generated from harness/client/aio.py" in head and "do not edit" in head


def _names(source: str) -> set[str]:
    return {tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
            if tok.type == tokenize.NAME}


def test_nothing_async_survives_and_the_table_is_whole() -> None:
    """unasync turns an ``AsyncX`` missing from the table into ``SyncX``: such a name, or an
    async one left over, means ``RENAMES`` lacks a row."""
    names = _names((CLIENT / "sync.py").read_text())
    leftovers = {n for n in names
                 if n in ("async", "await", "asyncio", "aclose", "afetch", "aiter_raw")
                 or n.startswith(("Async", "Sync", "__a")) or "_async" in n}
    assert not leftovers


def test_the_generator_notices_an_edit_to_either_file(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    needs_unasync()
    target = tmp_path / "sync.py"
    target.write_text(_generate.generate())
    monkeypatch.setattr(_generate, "TARGET", target)
    assert _generate.main(["--check"]) == 0
    target.write_text(target.read_text().replace("def chat(", "def chat_(", 1))
    assert _generate.main(["--check"]) == 1  # a hand edit of the generated file
    assert _generate.main([]) == 0 and target.read_text() == _generate.generate()
    edited = (CLIENT / "aio.py").read_text().replace("async def chat(", "async def talk(", 1)
    assert "def talk(" in _generate.generate(edited)  # and it follows the source


def test_both_backends_offer_what_the_shell_uses() -> None:
    used = set(re.findall(r"\bbackend\.(\w+)", (CLIENT / "aio.py").read_text()))
    assert used == {"Cutoff", "Sleep", "sleep", "transport"}
    for name in used:
        assert hasattr(_backend_async, name) and hasattr(_backend_sync, name), name
    a, s = _backend_async.Cutoff, _backend_sync.Cutoff
    assert inspect.signature(a).parameters.keys() == inspect.signature(s).parameters.keys()
    assert {"__enter__", "__exit__"} <= set(vars(a)) & set(vars(s))
