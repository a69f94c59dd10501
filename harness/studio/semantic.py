"""Semantic faults: the reply is well-formed on the wire but wrong the way LM Studio users report.

They act on the planned ``Reply`` before any encoding, so one rewrite gives the right shape on
every endpoint (OpenAI chat and completions, Responses, native ``/api/v1/chat``, Anthropic
``/v1/messages``) and in both the streamed and the non-streamed form. A fault with nothing to
change (``drop_tool_calls`` on a reply without tool calls) returns ``None``: it did not fire, and
the truth says so.
"""

from __future__ import annotations

import json
from dataclasses import replace

from harness.faults import (
    BlankToolIdFault,
    ContentToReasoningFault,
    DropToolCallsFault,
    EmptyReplyFault,
    FaultAction,
    InlineThinkFault,
    ToolCallsAsTextFault,
)
from harness.studio.generation import Reply, tokenize


def call_markup(name: object, arguments: object) -> str:
    """One call as the pseudo tool-call markup models print when parsing fails (BT#2115)."""
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments},
                                         ensure_ascii=False) + "\n</tool_call>"


def tool_call_text(reply: Reply) -> str:
    """The reply's calls as pseudo tool-call markup (``call_markup``)."""
    return "".join(call_markup(c.name, json.loads(c.arguments or "{}"))
                   for c in reply.tool_calls)


def apply_semantic(action: FaultAction | None, reply: Reply) -> Reply | None:
    """``reply`` as the semantic fault ``action`` makes it, or ``None`` if it changes nothing."""
    if isinstance(action, EmptyReplyFault):
        if not (reply.content or reply.reasoning or reply.tool_calls):
            return None
        return Reply(finish_reason="stop", prompt_tokens=reply.prompt_tokens,
                     hidden_tokens=reply.completion_tokens)
    if isinstance(action, ContentToReasoningFault):
        if not reply.content:
            return None
        content = reply.content[1:] if reply.content[:1] == ("\n\n",) else reply.content
        return replace(reply, reasoning=reply.reasoning + content, content=(),
                       finish_reason="tool_calls" if reply.tool_calls else "stop")
    if isinstance(action, DropToolCallsFault):
        if not reply.tool_calls:
            return None
        return replace(reply, tool_calls=(), finish_reason="stop")
    if isinstance(action, ToolCallsAsTextFault):
        if not reply.tool_calls:
            return None
        text = tokenize(tool_call_text(reply))
        return replace(reply, content=reply.content + text, tool_calls=(), finish_reason="stop",
                       hidden_tokens=0)
    if isinstance(action, BlankToolIdFault):
        if not reply.tool_calls:
            return None
        return replace(reply, tool_calls=tuple(replace(c, id="") for c in reply.tool_calls))
    if isinstance(action, InlineThinkFault):
        if not reply.reasoning:
            return None
        content = reply.content[1:] if reply.content[:1] == ("\n\n",) else reply.content
        return replace(reply, reasoning=(), content=("<think>", *reply.reasoning, "</think>",
                                                     "\n\n", *content))
    return None
