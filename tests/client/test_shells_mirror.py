"""``Client`` and ``AsyncClient`` mirror each other method for method. ``sync.py`` is generated
from ``aio.py`` (``test_generated_shells``), so this checks what the generation must give the
user: the same public names and parameters, the blocking calls coroutines in the async shell,
the stream openers plain methods in both; and that neither shell holds a rule of its own: both
read every response through the same ``ResponseReader``."""

from __future__ import annotations

import inspect
from pathlib import Path

from harness.client import AsyncChatStream, AsyncClient, ChatStream, Client

ASYNC_NAMES = {"close": "aclose", "__enter__": "__aenter__", "__exit__": "__aexit__",
               "__iter__": "__aiter__"}


def public(cls: type) -> dict[str, object]:
    return {name: member for name, member in vars(cls).items()
            if not name.startswith("_") or name in ASYNC_NAMES or name in ASYNC_NAMES.values()}


def test_the_clients_mirror_each_other() -> None:
    sync, aio = public(Client), public(AsyncClient)
    assert {ASYNC_NAMES.get(n, n) for n in sync} == set(aio)
    for name, member in sync.items():
        twin = aio[ASYNC_NAMES.get(name, name)]
        if isinstance(member, property):
            assert isinstance(twin, property), name
            continue
        assert inspect.signature(member).parameters.keys() == \
            inspect.signature(twin).parameters.keys(), name  # type: ignore[arg-type]
        returns_at_once = name.startswith("stream_") or name == "with_options"
        assert inspect.iscoroutinefunction(twin) is not returns_at_once, name


def test_the_streams_mirror_each_other() -> None:
    sync, aio = public(ChatStream), public(AsyncChatStream)
    assert {ASYNC_NAMES.get(n, n) for n in sync} == set(aio)


def test_no_shell_decodes_or_decides_on_its_own() -> None:
    """The shells import no decoder, assembler or error builder: those live in the call layer."""
    here = Path(__file__).resolve().parents[2] / "harness" / "client"
    for shell in ("sync.py", "aio.py"):
        text = (here / shell).read_text()
        for rule in ("SSEDecoder", "Assembler(", "error_from_response", "json.loads",
                     "RetryPolicy.decide", "retry_after", "zlib"):
            assert rule not in text, f"{shell} holds {rule!r}"
