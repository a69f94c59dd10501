"""The client core: sync and async shells over one sans-IO call layer.

    request   pure builders: endpoint arguments -> one frozen Call (no I/O)
    stream    ResponseReader: one attempt's response against a clock (decode, assemble,
              completeness, model check, answer checks, time limits, switch cut-off)
    retry     RetryPolicy / RetryBudget / Attempts: retries decided in one place
    protocol  what LM Studio's bodies and events mean (errors, results, answer checks)
    _httpx    the only httpx-specific rules: limits, per-read bounds, exception table
    sync/aio  Client / AsyncClient: move bytes, sleep, plumb cancellation; aio.py is the
              source, sync.py is generated from it (python -m harness.client._generate)
    _backend_async/_backend_sync  what truly differs: sleep, switch_model cut-off, transport
"""

from harness.client.aio import AsyncChatStream, AsyncClient
from harness.client.catalog import ModelCatalog
from harness.client.config import Timeouts
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
