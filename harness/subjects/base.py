"""What a suite drives: a *subject*, the thinnest adapter over a client the suites did not write.

Why a seam at all: the emulator, the fault plans and the ground truth already judge any client;
the suites only need a uniform way to make it do four things (answer, stream, list, close). The
adapter is deliberately dumb. It passes the call through, turns the client's return value into an
``Answer`` and **never catches or translates an error**: whatever the client raised reaches the
suite as raised, and whatever it returned (an error dict, an ``"Error: ..."`` string, an empty
text) is judged as an answer against what the server really did.

A subject offers a sync API (``chat``, ``stream_chat``, ``list_models``, ``close``), an async one
(``achat``, ``astream_chat``, ``alist_models``, ``aclose``) or both, and says which in
``capabilities``; a test that needs what a subject lacks is skipped with the reason.

``stream_chat`` yields the text pieces as the client delivers them, then exactly one ``Answer``
(what the client finally made of the stream). Closing the iterator early must close the stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

CAPABILITIES = ("sync", "async", "stream", "tools", "list_models")
"""``sync``/``async``: which API the subject offers; ``stream``: ``stream_chat``; ``tools``: it
passes ``tools`` through and reports tool calls; ``list_models``: it lists the server's models."""

ErrorStyle = Literal["raises", "returns"]

REQUIRED = ("name", "capabilities", "chat", "stream_chat", "list_models", "close")
ASYNC_REQUIRED = ("achat", "astream_chat", "alist_models", "aclose")


class SubjectError(Exception):
    """A subject could not be found, imported, built or used; the message is one line."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What a client made of one call, in the terms the suites judge it on.

    ``model`` is the model the answer says answered (None if the client does not expose it);
    ``finish_reason`` None means the client did not say. ``raw`` keeps the client's own value.
    """

    text: str
    model: str | None = None
    finish_reason: str | None = None
    completion_tokens: int | None = None
    tool_calls: tuple[tuple[str, str], ...] = ()  # (name, arguments as JSON text)
    raw: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, value: Any) -> Answer:
        """An ``Answer`` from a client's plain return value (a string, a dict, None).

        A dict is read OpenAI-style (``choices[0].message.content``); one without that shape,
        such as ``{"error": ...}``, becomes its text so it is judged like any other answer.
        """
        if isinstance(value, Answer):
            return value
        if value is None:
            return cls("", raw=value)
        if isinstance(value, str):
            return cls(value, raw=value)
        if isinstance(value, dict):
            choices = value.get("choices")
            if isinstance(choices, list) and choices and isinstance(choices[0], dict):
                message = choices[0].get("message") or {}
                usage = value.get("usage") or {}
                return cls(str(message.get("content") or ""), value.get("model"),
                           choices[0].get("finish_reason"), usage.get("completion_tokens"),
                           raw=value)
            import json

            return cls(json.dumps(value, default=str), raw=value)
        return cls(str(value), raw=value)


@dataclass(frozen=True, slots=True)
class SubjectConfig:
    """Where a subject's client should point and how patient it may be.

    ``base_url`` is the server root (``http://127.0.0.1:1234``); OpenAI-style clients take
    ``openai_base_url`` (with ``/v1``). ``timeout`` is a per-request budget in seconds a client
    should apply where it has one (so a hung server fails a test instead of hanging it).
    """

    base_url: str
    api_token: str | None = None
    model: str | None = None
    timeout: float = 30.0

    @property
    def openai_base_url(self) -> str:
        return self.base_url.rstrip("/") + "/v1"


class Subject:
    """Convenience base for adapters: declares nothing, offers nothing until overridden.

    Subclassing is optional; any object with the attributes in ``REQUIRED`` (and, if it claims
    ``async``, ``ASYNC_REQUIRED``) is a subject.
    """

    name: str = "subject"
    capabilities: frozenset[str] = frozenset()
    errors: ErrorStyle = "raises"

    def chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> Answer:
        raise NotImplementedError(f"subject {self.name} has no sync chat")

    def stream_chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any
                    ) -> Iterator[str | Answer]:
        raise NotImplementedError(f"subject {self.name} has no sync stream_chat")

    def list_models(self) -> list[str]:
        raise NotImplementedError(f"subject {self.name} cannot list models")

    def close(self) -> None:
        return None

    async def achat(self, messages: list[dict[str, Any]], *, model: str, **params: Any
                    ) -> Answer:
        raise NotImplementedError(f"subject {self.name} has no async chat")

    def astream_chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any
                     ) -> AsyncIterator[str | Answer]:
        raise NotImplementedError(f"subject {self.name} has no async stream_chat")

    async def alist_models(self) -> list[str]:
        raise NotImplementedError(f"subject {self.name} cannot list models")

    async def aclose(self) -> None:
        return None


def check_subject(value: Any, spec: str) -> Any:
    """``value`` if it is a subject, else ``SubjectError`` naming what it lacks."""
    missing = [name for name in REQUIRED if not hasattr(value, name)]
    if not missing:
        caps = value.capabilities
        if not isinstance(caps, frozenset | set | tuple | list):
            raise SubjectError(f"subject {spec!r}: capabilities must be a set of names, "
                               f"got {type(caps).__name__}")
        unknown = sorted(set(caps) - set(CAPABILITIES))
        if unknown:
            raise SubjectError(f"subject {spec!r} declares unknown capabilities "
                               f"{', '.join(unknown)}; known: {', '.join(CAPABILITIES)}")
        if "async" in caps:
            missing = [name for name in ASYNC_REQUIRED if not hasattr(value, name)]
    if missing:
        raise SubjectError(f"subject {spec!r} built {type(value).__name__}, which is not a "
                           f"subject (missing {', '.join(missing)})")
    return value


def missing_capabilities(subject: Any, needs: tuple[str, ...]) -> str | None:
    """Why ``subject`` cannot run a test needing ``needs``, or None when it can."""
    for need in needs:
        if need not in CAPABILITIES:
            raise SubjectError(f"unknown subject capability {need!r}; known: "
                               f"{', '.join(CAPABILITIES)}")
    absent = [n for n in needs if n not in subject.capabilities]
    if not absent:
        return None
    return f"subject {subject.name} does not offer: {', '.join(absent)}"


def collect(pieces: Iterator[str | Answer], subject_name: str = "subject"
            ) -> tuple[list[str], Answer]:
    """Drain a ``stream_chat`` iterator into its text pieces and final answer."""
    texts: list[str] = []
    for item in pieces:
        if isinstance(item, Answer):
            return texts, item
        texts.append(item)
    raise SubjectError(f"stream_chat of subject {subject_name} ended without its final Answer")


async def acollect(pieces: AsyncIterator[str | Answer], subject_name: str = "subject"
                   ) -> tuple[list[str], Answer]:
    """``collect`` for ``astream_chat``."""
    texts: list[str] = []
    async for item in pieces:
        if isinstance(item, Answer):
            return texts, item
        texts.append(item)
    raise SubjectError(f"astream_chat of subject {subject_name} ended without its final Answer")
