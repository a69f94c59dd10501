"""Subject ``litellm`` (extra ``litellm``): LiteLLM's ``completion`` / ``acompletion`` against the
server's OpenAI-compatible endpoint (``openai/<model>`` with ``api_base``), LiteLLM's defaults."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import litellm  # at import: a missing extra is reported when the subject is named

from harness.subjects.base import Answer, Subject, SubjectConfig
from harness.subjects.openai_sdk import _answer, _StreamState


class LiteLLMSubject(Subject):
    name = "litellm"
    capabilities = frozenset({"sync", "async", "stream", "tools"})

    def __init__(self, config: SubjectConfig) -> None:
        self._litellm = litellm
        self._common: dict[str, Any] = {"api_base": config.openai_base_url,
                                        "api_key": config.api_token or "lm-studio",
                                        "timeout": config.timeout}

    def chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> Answer:
        return _answer(self._litellm.completion(model=f"openai/{model}", messages=messages,
                                                **self._common, **params))

    def stream_chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any
                    ) -> Iterator[str | Answer]:
        state = _StreamState()
        for chunk in self._litellm.completion(model=f"openai/{model}", messages=messages,
                                              stream=True, **self._common, **params):
            piece = state.feed(chunk)
            if piece:
                yield piece
        yield state.answer()

    async def achat(self, messages: list[dict[str, Any]], *, model: str, **params: Any
                    ) -> Answer:
        return _answer(await self._litellm.acompletion(
            model=f"openai/{model}", messages=messages, **self._common, **params))

    async def astream_chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any
                           ) -> AsyncIterator[str | Answer]:
        state = _StreamState()
        stream = await self._litellm.acompletion(model=f"openai/{model}", messages=messages,
                                                 stream=True, **self._common, **params)
        async for chunk in stream:
            piece = state.feed(chunk)
            if piece:
                yield piece
        yield state.answer()


def create(config: SubjectConfig) -> LiteLLMSubject:
    return LiteLLMSubject(config)
