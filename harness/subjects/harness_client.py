"""Subject ``harness``: the harness's own ``Client`` and ``AsyncClient`` with their default
retry policy (the caps the suites check), timeouts from the subject config."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from harness.subjects.base import Answer, Subject, SubjectConfig


def _answer(result: Any) -> Answer:
    usage = result.usage
    return Answer(result.text, result.model, result.finish_reason,
                  usage.completion_tokens if usage is not None else None,
                  tuple((c.name, c.arguments) for c in result.tool_calls), raw=result)


class HarnessSubject(Subject):
    name = "harness"
    capabilities = frozenset({"sync", "async", "stream", "tools", "list_models"})

    def __init__(self, config: SubjectConfig) -> None:
        from harness.client import AsyncClient, Client, Timeouts

        timeouts = Timeouts(connect=min(5.0, config.timeout), read=config.timeout,
                            stream_idle=min(10.0, config.timeout), deadline=2 * config.timeout)
        common: dict[str, Any] = {"model": config.model, "api_token": config.api_token,
                                  "timeout": timeouts}
        # Both built up front (no I/O until the first call): a test uses one API or the other.
        self.client = Client(config.base_url, **common)
        self.aclient = AsyncClient(config.base_url, **common)

    def chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> Answer:
        return _answer(self.client.chat(messages, model=model, **params))

    def stream_chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any
                    ) -> Iterator[str | Answer]:
        from harness.client import TextDelta

        with self.client.stream_chat(messages, model=model, **params) as stream:
            for event in stream:
                if isinstance(event, TextDelta) and event.text:
                    yield event.text
            yield _answer(stream.result())

    def list_models(self) -> list[str]:
        return [m.id for m in self.client.list_models()]

    def close(self) -> None:
        self.client.close()

    async def achat(self, messages: list[dict[str, Any]], *, model: str, **params: Any
                    ) -> Answer:
        return _answer(await self.aclient.chat(messages, model=model, **params))

    async def astream_chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any
                           ) -> AsyncIterator[str | Answer]:
        from harness.client import TextDelta

        async with self.aclient.stream_chat(messages, model=model, **params) as stream:
            async for event in stream:
                if isinstance(event, TextDelta) and event.text:
                    yield event.text
            yield _answer(await stream.result())

    async def alist_models(self) -> list[str]:
        return [m.id for m in await self.aclient.list_models()]

    async def aclose(self) -> None:
        self.client.close()
        await self.aclient.aclose()


def create(config: SubjectConfig) -> HarnessSubject:
    return HarnessSubject(config)
