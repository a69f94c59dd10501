"""Subject ``openai``: the official ``openai`` SDK (``OpenAI`` / ``AsyncOpenAI``) used the way its
documentation shows, with the SDK's own defaults (two retries) and the config's timeout.

Streams are read as the SDK's users read them: text from ``choices[0].delta.content``, the
finish reason from the chunk that carries one, the model from the chunks. Nothing is checked
here that the SDK does not check itself: that is what the suites measure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from openai import AsyncOpenAI, OpenAI  # at import: a missing extra is reported when named

from harness.subjects.base import Answer, Subject, SubjectConfig

PASSED = ("temperature", "max_tokens", "seed", "top_p", "stop", "tools", "tool_choice")


def _kwargs(params: dict[str, Any]) -> dict[str, Any]:
    known = {k: v for k, v in params.items() if k in PASSED and v is not None}
    extra = {k: v for k, v in params.items() if k not in PASSED and v is not None}
    if extra:
        known["extra_body"] = extra
    return known


def _answer(completion: Any) -> Answer:
    choice = completion.choices[0] if completion.choices else None
    message = choice.message if choice is not None else None
    calls = tuple((c.function.name, c.function.arguments)
                  for c in (message.tool_calls or [])) if message is not None else ()
    usage = getattr(completion, "usage", None)
    return Answer((message.content or "") if message is not None else "", completion.model,
                  choice.finish_reason if choice is not None else None,
                  usage.completion_tokens if usage is not None else None, calls, raw=completion)


class _StreamState:
    """What a reader of the SDK's chunks ends up with."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.model: str | None = None
        self.finish: str | None = None
        self.tokens: int | None = None
        self.calls: dict[int, list[str]] = {}

    def feed(self, chunk: Any) -> str | None:
        self.model = getattr(chunk, "model", None) or self.model
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.tokens = usage.completion_tokens
        piece = None
        for choice in chunk.choices or []:
            delta = choice.delta
            if delta.content:
                piece = delta.content
                self.text.append(piece)
            for call in getattr(delta, "tool_calls", None) or []:
                name, args = self.calls.setdefault(call.index, ["", ""])
                fn = call.function
                if fn is not None:
                    self.calls[call.index] = [name + (fn.name or ""),
                                              args + (fn.arguments or "")]
            if choice.finish_reason:
                self.finish = choice.finish_reason
        return piece

    def answer(self) -> Answer:
        calls = tuple((n, a) for n, a in (self.calls[i] for i in sorted(self.calls)))
        return Answer("".join(self.text), self.model, self.finish, self.tokens, calls)


class OpenAISubject(Subject):
    name = "openai"
    capabilities = frozenset({"sync", "async", "stream", "tools", "list_models"})

    def __init__(self, config: SubjectConfig) -> None:
        common: dict[str, Any] = {"base_url": config.openai_base_url,
                                  "api_key": config.api_token or "lm-studio",
                                  "timeout": config.timeout}
        # Typed as Any: the SDK's overloads want TypedDict messages; the suites pass plain dicts.
        self.client: Any = OpenAI(**common)
        self.aclient: Any = AsyncOpenAI(**common)

    def chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> Answer:
        return _answer(self.client.chat.completions.create(
            model=model, messages=messages, **_kwargs(params)))

    def stream_chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any
                    ) -> Iterator[str | Answer]:
        state = _StreamState()
        with self.client.chat.completions.create(
                model=model, messages=messages, stream=True,
                stream_options={"include_usage": True}, **_kwargs(params)) as stream:
            for chunk in stream:
                piece = state.feed(chunk)
                if piece:
                    yield piece
        yield state.answer()

    def list_models(self) -> list[str]:
        return [m.id for m in self.client.models.list()]

    def close(self) -> None:
        self.client.close()

    async def achat(self, messages: list[dict[str, Any]], *, model: str, **params: Any
                    ) -> Answer:
        return _answer(await self.aclient.chat.completions.create(
            model=model, messages=messages, **_kwargs(params)))

    async def astream_chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any
                           ) -> AsyncIterator[str | Answer]:
        state = _StreamState()
        stream = await self.aclient.chat.completions.create(
            model=model, messages=messages, stream=True,
            stream_options={"include_usage": True}, **_kwargs(params))
        async with stream:
            async for chunk in stream:
                piece = state.feed(chunk)
                if piece:
                    yield piece
        yield state.answer()

    async def alist_models(self) -> list[str]:
        return [m.id async for m in self.aclient.models.list()]

    async def aclose(self) -> None:
        self.client.close()
        await self.aclient.close()


def create(config: SubjectConfig) -> OpenAISubject:
    return OpenAISubject(config)
