"""Semantic faults on the wire, for the fault proxy: OpenAI chat completions rewritten in flight.

The emulator applies ``empty_reply``, ``content_to_reasoning``, ``drop_tool_calls``,
``tool_calls_as_text``, ``blank_tool_id`` and ``inline_think`` to its planned reply
(``harness.studio.semantic``); in front of a live server the proxy has only the bytes. For
``/v1/chat/completions`` (stream chunks and plain bodies, the endpoint LM Studio's users report
these failures on) this module makes the same changes to the upstream's answer; other endpoints
pass untouched and the fault does not fire. ``fired`` says whether anything was changed.
"""

from __future__ import annotations

import json
from typing import Any

from harness.faults import FaultAction
from harness.studio.semantic import call_markup

_REASONING = ("reasoning_content", "reasoning")


def applies_on_wire(action: FaultAction | None, path: str) -> bool:
    return action is not None and action.scope == "reply" and path.endswith("/chat/completions")


def _markup(calls: list[dict[str, Any]]) -> str:
    out = []
    for call in calls:
        fn = call.get("function") or {}
        try:
            arguments = json.loads(fn.get("arguments") or "{}")
        except json.JSONDecodeError:
            arguments = fn.get("arguments")
        out.append(call_markup(fn.get("name"), arguments))
    return "".join(out)


class ChatRewriter:
    """One response's rewrite: ``chunk`` for each streamed chunk, ``body`` for a plain one."""

    def __init__(self, action: FaultAction) -> None:
        self.kind = action.kind
        self.fired = False
        self._calls: dict[int, dict[str, Any]] = {}
        self._think = 0  # 0 before reasoning, 1 inside <think>, 2 after </think>

    # -- streams ---------------------------------------------------------------------------------
    def frame(self, frame: bytes) -> bytes:
        if not frame.startswith(b"data: {"):
            return frame
        try:
            data = json.loads(frame[6:])
        except json.JSONDecodeError:
            return frame
        choices = data.get("choices") if isinstance(data, dict) else None
        if not choices or not isinstance(choices[0], dict):
            return frame
        self._chunk(choices[0])
        return b"data: " + json.dumps(data, separators=(",", ":"),
                                      ensure_ascii=False).encode() + b"\n\n"

    def _chunk(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        kind, finish = self.kind, choice.get("finish_reason")
        if kind == "empty_reply":
            for key in ("content", *_REASONING, "tool_calls"):
                if delta.pop(key, None):
                    self.fired = True
        elif kind == "content_to_reasoning" and delta.get("content"):
            delta["reasoning_content"] = delta.pop("content")
            self.fired = True
        elif kind in ("drop_tool_calls", "tool_calls_as_text") and delta.get("tool_calls"):
            for call in delta.pop("tool_calls"):
                entry = self._calls.setdefault(int(call.get("index") or 0),
                                               {"function": {"name": None, "arguments": ""}})
                fn = call.get("function") or {}
                entry["function"]["name"] = fn.get("name") or entry["function"]["name"]
                entry["function"]["arguments"] += fn.get("arguments") or ""
            self.fired = True
        elif kind == "blank_tool_id":
            for call in delta.get("tool_calls") or ():
                if call.get("id"):
                    call["id"] = ""
                    self.fired = True
        elif kind == "inline_think":
            reasoning = next((delta.pop(k) for k in _REASONING if delta.get(k)), None)
            if reasoning:
                delta["content"] = ("<think>" if self._think == 0 else "") + reasoning + \
                    delta.get("content", "")
                self._think, self.fired = 1, True
            elif self._think == 1 and (delta.get("content") or finish):
                delta["content"] = "</think>\n\n" + (delta.get("content") or "")
                self._think = 2
        if finish:
            if kind == "tool_calls_as_text" and self._calls:
                delta["content"] = (delta.get("content") or "") + _markup(
                    [self._calls[i] for i in sorted(self._calls)])
            if self.fired and kind != "blank_tool_id" and kind != "inline_think":
                choice["finish_reason"] = "stop"

    # -- plain bodies ----------------------------------------------------------------------------
    def body(self, raw: bytes) -> bytes:
        try:
            data = json.loads(raw)
            message = data["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            return raw
        if not isinstance(message, dict):
            return raw
        kind = self.kind
        reasoning_key = next((k for k in _REASONING if k in message), "reasoning_content")
        content = message.get("content") or ""
        reasoning = message.get(reasoning_key) or ""
        calls = message.get("tool_calls") or []
        if kind == "empty_reply" and (content or reasoning or calls):
            message.update({"content": "", reasoning_key: "", "tool_calls": []})
        elif kind == "content_to_reasoning" and content:
            message.update({"content": "", reasoning_key: reasoning + content.lstrip("\n")})
        elif kind == "drop_tool_calls" and calls:
            message["tool_calls"] = []
        elif kind == "tool_calls_as_text" and calls:
            message.update({"content": content + _markup(calls), "tool_calls": []})
        elif kind == "blank_tool_id" and any(c.get("id") for c in calls):
            for call in calls:
                call["id"] = ""
        elif kind == "inline_think" and reasoning:
            message.update({"content": f"<think>{reasoning}</think>\n\n{content.lstrip()}",
                            reasoning_key: ""})
        else:
            return raw
        self.fired = True
        if kind not in ("blank_tool_id", "inline_think"):
            data["choices"][0]["finish_reason"] = "stop"
        return json.dumps(data, ensure_ascii=False).encode()
