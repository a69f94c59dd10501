"""A small app that calls LM Studio through the official ``openai`` SDK: a support bot.

It is the example of "testing your own app" (see the README section of that name). The bot adds
what the SDK leaves out, and its tests (``tests/``) prove each addition against the harness's
emulator, fault plans and ground truth:

- a stream that ends without a finish reason is an ``IncompleteAnswer``, not a short answer;
- an answer from another model than the one asked for is a ``WrongModel``;
- every failure is a ``BotError`` whose message names the server and the model.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
from openai import OpenAI

SYSTEM = "You are the support assistant of ACME. Answer briefly."


class BotError(Exception):
    """Any failure of the bot, naming the server and the model it was talking to."""


class IncompleteAnswer(BotError):
    """The stream ended before the model said it had finished; ``partial`` keeps the text."""

    def __init__(self, message: str, partial: str) -> None:
        super().__init__(message)
        self.partial = partial


class WrongModel(BotError):
    """The server answered with another model than the one asked for."""


class SupportBot:
    def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
                 timeout: float = 30.0, max_retries: int = 2) -> None:
        self.base_url, self.model = base_url, model
        self.client = OpenAI(base_url=base_url, api_key=api_key or "lm-studio",
                             timeout=timeout, max_retries=max_retries)

    def _where(self) -> str:
        return f"{self.base_url} (model={self.model})"

    def _messages(self, question: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]

    def _check_model(self, answered: str | None) -> None:
        if answered and answered.split(":")[0] != self.model:
            raise WrongModel(f"{self._where()}: answered by {answered}")

    def answer(self, question: str) -> str:
        try:
            completion = self.client.chat.completions.create(
                model=self.model, messages=self._messages(question), seed=1)
        except openai.OpenAIError as exc:
            raise BotError(f"{self._where()}: {type(exc).__name__}: {exc}") from exc
        if not getattr(completion, "choices", None):  # LM Studio's 200 with {"error": ...}
            raise BotError(f"{self._where()}: no answer in the response")
        self._check_model(completion.model)
        return completion.choices[0].message.content or ""

    def stream_answer(self, question: str) -> Iterator[str]:
        """Yields the answer as it arrives; raises ``IncompleteAnswer`` if it was cut off."""
        text, finish = [], None
        try:
            stream = self.client.chat.completions.create(
                model=self.model, messages=self._messages(question), seed=1,
                stream=True)
            with stream:
                for chunk in stream:
                    self._check_model(chunk.model)
                    for choice in chunk.choices:
                        if choice.delta.content:
                            text.append(choice.delta.content)
                            yield choice.delta.content
                        finish = choice.finish_reason or finish
        except openai.OpenAIError as exc:
            raise BotError(f"{self._where()}: {type(exc).__name__}: {exc}") from exc
        if finish is None:
            raise IncompleteAnswer(f"{self._where()}: the stream ended without a finish "
                                   f"reason after {len(text)} pieces", "".join(text))

    def close(self) -> None:
        self.client.close()
