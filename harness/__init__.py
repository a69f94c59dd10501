"""LM Studio Harness: a client core, an emulator and evaluation suites for LM Studio."""

from __future__ import annotations

__version__ = "0.1.0"

from harness.client import (
    AsyncChatStream,
    AsyncClient,
    ChatResult,
    ChatStream,
    Client,
    ModelCatalog,
    RetryPolicy,
    Timeouts,
    errors,
)

__all__ = [
    "AsyncChatStream", "AsyncClient", "ChatResult", "ChatStream", "Client", "ModelCatalog",
    "RetryPolicy", "Timeouts", "__version__", "errors",
]
