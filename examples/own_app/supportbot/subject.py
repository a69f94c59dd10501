"""The bot's client as a harness *subject*, so the harness's suites can judge it:

    harness evaluate --subject supportbot.subject:create --subject openai

The adapter only passes calls through: it never catches the bot's errors (the suites judge what
the bot raised), and it turns the bot's return values into ``Answer``s.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from harness.subjects import Answer, Subject, SubjectConfig
from supportbot import SupportBot


class SupportBotSubject(Subject):
    name = "supportbot"
    capabilities = frozenset({"sync", "stream"})

    def __init__(self, config: SubjectConfig) -> None:
        self.config = config
        self.bots: dict[str, SupportBot] = {}

    def bot(self, model: str) -> SupportBot:
        """One bot per model, as the app would configure them."""
        if model not in self.bots:
            self.bots[model] = SupportBot(self.config.openai_base_url, model,
                                          api_key=self.config.api_token,
                                          timeout=self.config.timeout)
        return self.bots[model]

    @staticmethod
    def question(messages: list[dict[str, Any]]) -> str:
        return str(messages[-1]["content"])

    def chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any) -> Answer:
        # the bot reports no finish reason or model of its own: an answer is all it returns
        return Answer(self.bot(model).answer(self.question(messages)), model=model)

    def stream_chat(self, messages: list[dict[str, Any]], *, model: str, **params: Any
                    ) -> Iterator[str | Answer]:
        pieces = []
        for piece in self.bot(model).stream_answer(self.question(messages)):
            pieces.append(piece)
            yield piece
        yield Answer("".join(pieces), model=model, finish_reason="stop")

    def list_models(self) -> list[str]:
        raise NotImplementedError("the bot does not list models")

    def close(self) -> None:
        for bot in self.bots.values():
            bot.close()


def create(config: SubjectConfig) -> SupportBotSubject:
    return SupportBotSubject(config)
