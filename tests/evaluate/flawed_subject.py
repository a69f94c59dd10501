"""A client with a known flaw, written the way many app clients are: it reads SSE ``data:`` lines
until ``[DONE]`` *or the end of the body*, and never looks at ``finish_reason``. So a stream that
ends early (no ``[DONE]``, no finish reason) comes back as a whole answer. The suites must flag it:
``test_flawed_subject_is_flagged`` checks they do (their detection power, tested).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from harness.subjects import Answer, Subject, SubjectConfig


class NaiveClient:
    """The app's own client (the flawed part is ``stream``)."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def complete(self, messages: list[dict[str, Any]], model: str, **params: Any
                 ) -> dict[str, Any]:
        response = self.http.post("/chat/completions",
                                  json={"model": model, "messages": messages, **params})
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def stream(self, messages: list[dict[str, Any]], model: str, **params: Any
               ) -> Iterator[dict[str, Any]]:
        body = {"model": model, "messages": messages, "stream": True, **params}
        with self.http.stream("POST", "/chat/completions", json=body) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: "):]
                if data == "[DONE]":
                    return
                yield json.loads(data)
        # the flaw: the body ended without [DONE], and that is taken as the end of the answer


class NaiveSubject(Subject):
    name = "naive"
    capabilities = frozenset({"sync", "stream"})

    def __init__(self, config: SubjectConfig) -> None:
        self.client = NaiveClient(config.openai_base_url, config.api_token, config.timeout)

    def chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> Answer:
        return Answer.of(self.client.complete(messages, model, **params))

    def stream_chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any
                    ) -> Iterator[str | Answer]:
        text, answered, finish = [], None, None
        for chunk in self.client.stream(messages, model, **params):
            answered = chunk.get("model", answered)
            for choice in chunk.get("choices", []):
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    text.append(piece)
                    yield piece
                finish = choice.get("finish_reason") or finish
        yield Answer("".join(text), answered, finish)

    def close(self) -> None:
        self.client.http.close()


def create(config: SubjectConfig) -> NaiveSubject:
    return NaiveSubject(config)
