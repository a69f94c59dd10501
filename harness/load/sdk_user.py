"""A Locust user built on the official ``openai`` SDK, for comparison only (the benchmark).

It answers one question: how much does the harness's own hot path (socket read -> sans-IO SSE
decoder -> assembler) buy over the SDK most applications use? It measures with the same rule
(TTFT = first chunk with content, reasoning or tool-call delta) and records the same
``RequestRecord``, so both users are judged by the same analysis and the same ground truth. It is
not used by the product's scenarios.
"""

from __future__ import annotations

import json
import time
from typing import Any

from harness.client.validation import normalize_base_url
from harness.load.exchange import PreparedRequest, to_epoch
from harness.load.metrics import RequestRecord
from harness.load.plugin import STATE, LLMUser


class OpenAISDKUser(LLMUser):
    """Chat completions through ``openai.OpenAI(...).chat.completions.create(stream=True)``."""

    def on_start(self) -> None:
        super().on_start()
        import openai

        self.root = normalize_base_url(self.host or "")
        self.sdk = openai.OpenAI(base_url=self.root + "/v1",
                                 api_key=STATE.api_token or "lm-studio", max_retries=0,
                                 timeout=60.0)

    def execute_request(self, req: PreparedRequest, intended: float | None) -> RequestRecord:
        call = req.call(self.root)  # the same body and X-Request-Id rules as the harness user
        body: dict[str, Any] = json.loads(call.body or b"{}")
        extra = {k: v for k, v in body.items()
                 if k not in ("model", "messages", "stream", "max_tokens", "stream_options",
                              "temperature", "seed")}
        request_id = call.request_id
        t_send = time.perf_counter()
        record = RequestRecord(endpoint=req.endpoint, model=req.model, stream=True,
                               t_intended=to_epoch(t_send if intended is None else intended),
                               t_send=to_epoch(t_send), request_id=request_id)
        first: float | None = None
        last: float | None = None
        gaps: list[float] = []
        try:
            stream = self.sdk.chat.completions.create(
                model=body["model"], messages=body["messages"], stream=True,
                max_tokens=body.get("max_tokens"), stream_options={"include_usage": True},
                temperature=body.get("temperature"), extra_body=extra or None,
                extra_headers={"X-Request-Id": request_id})
            for chunk in stream:
                now = time.perf_counter()
                if chunk.usage is not None:
                    record.n_server = chunk.usage.completion_tokens
                    record.prompt_tokens = chunk.usage.prompt_tokens
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                delta = choice.delta
                extra_fields = delta.model_extra or {}
                if (delta.content or delta.tool_calls or extra_fields.get("reasoning_content")
                        or extra_fields.get("reasoning")):
                    if first is None:
                        first = now
                    else:
                        assert last is not None
                        gaps.append(now - last)
                    last = now
                if choice.finish_reason:
                    record.finish_reason = choice.finish_reason
            record.status = 200
        except Exception as exc:  # the SDK's own error tree; recorded by class name
            record.ok = False
            record.error_kind = type(exc).__name__
            record.error = str(exc)[:300]
            record.status = getattr(exc, "status_code", None)
        done = time.perf_counter()
        record.t_done = to_epoch(done)
        if first is not None:
            record.t_first_token = record.t_first_visible = to_epoch(first)
            record.t_last_token = to_epoch(last if last is not None else first)
        record.gaps = gaps
        record.chunks = len(gaps) + 1 if first is not None else 0
        return record
