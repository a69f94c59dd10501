"""The client core: sync and async shells over one sans-IO protocol."""

from harness.client.aio import AsyncChatStream, AsyncClient
from harness.client.base import Timeouts
from harness.client.catalog import ModelCatalog
from harness.client.models import (
    ChatResult,
    Embeddings,
    ModelInfo,
    ProgressEvent,
    ReasoningDelta,
    ResponseResult,
    StreamEvent,
    TextDelta,
    Timings,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from harness.client.retry import RetryBudget, RetryPolicy
from harness.client.sync import ChatStream, Client

__all__ = [
    "AsyncChatStream", "AsyncClient", "ChatResult", "ChatStream", "Client", "Embeddings",
    "ModelCatalog", "ModelInfo", "ProgressEvent", "ReasoningDelta", "ResponseResult",
    "RetryBudget", "RetryPolicy", "StreamEvent", "TextDelta", "Timeouts", "Timings", "ToolCall",
    "ToolCallDelta", "Usage",
]
