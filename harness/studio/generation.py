"""Deterministic "model output" for the emulator.

Everything here is pure: the same model, prompt and seed always give the same tokens, so a suite
can assert on text, a load test can replay a run, and a client test can compare a stream with its
non-stream twin. Randomness comes from a ``random.Random`` seeded by a SHA-256 of the inputs,
never from global state. Speed and I/O live elsewhere (``engine`` schedules, ``encoding`` frames).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from harness.studio.catalog import ModelSpec

WORDS: tuple[str, ...] = (
    "the", "model", "answers", "with", "tokens", "that", "arrive", "one", "by", "one",
    "over", "a", "local", "socket", "while", "the", "harness", "measures", "time", "to",
    "first", "token", "inter", "token", "latency", "and", "throughput", "under", "load",
    "streams", "may", "end", "early", "when", "another", "model", "is", "loaded", "so",
    "every", "client", "must", "check", "the", "finish", "reason", "before", "trusting",
    "a", "reply", "queue", "slots", "parallel", "requests", "cache", "expiry", "retry",
    "budget", "backoff", "jitter", "deadline", "context", "window", "prompt", "template",
    "reasoning", "tool", "call", "arguments", "schema", "validation", "embedding", "vector",
    "catalog", "server", "process", "memory", "latency", "percentile", "report", "review",
    "agent", "suite", "fixture", "cassette", "emulator", "proxy", "fault", "status",
    "header", "chunk", "frame", "event", "error", "recovery", "timeout", "connection",
    "pool", "keep", "alive", "quick", "brown", "fox", "jumps", "over", "lazy", "dog",
    "small", "large", "fast", "slow", "local", "remote", "simple", "robust", "clear",
    "honest", "exact", "careful", "bounded", "typed", "pure", "stable",
)

# The words free text is drawn from, per request: ``harness.studio.stress`` swaps in a multibyte
# vocabulary of the same length for a stressed request (its task only; scripted, review and
# JSON-schema answers never read it).
VOCABULARY: ContextVar[tuple[str, ...]] = ContextVar("VOCABULARY", default=WORDS)

TOOLS_DIRECTIVE = re.compile(r"\[\[tools:\s*")
_TOKEN_PIECES = re.compile(r"\s*[A-Za-z0-9_]{1,6}|\s*[^A-Za-z0-9_\s]|\s+")


@dataclass(frozen=True)
class PlannedToolCall:
    """One tool call of a reply: LM Studio-style numeric id, name, JSON argument string."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Reply:
    """What a model "decided" to answer, before any timing or wire format is applied."""

    reasoning: tuple[str, ...] = ()
    content: tuple[str, ...] = ()
    tool_calls: tuple[PlannedToolCall, ...] = ()
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    #: Tokens counted in usage but not emitted as reasoning or content (tool-call arguments, or
    #: the output of an empty reply that still reports usage).
    hidden_tokens: int = field(default=0)
    #: Token steps the wire spends on events outside this reply's tokens (the server-side tool
    #: calls of ``/api/v1/chat``, two steps each).
    extra_steps: int = field(default=0)

    @property
    def text(self) -> str:
        return "".join(self.content)

    @property
    def reasoning_text(self) -> str:
        return "".join(self.reasoning)

    @property
    def completion_tokens(self) -> int:
        return len(self.reasoning) + len(self.content) + self.hidden_tokens

    @property
    def emission_steps(self) -> int:
        """How many token-time steps the stream takes (tool calls: name then arguments)."""
        return (len(self.reasoning) + len(self.content) + 2 * len(self.tool_calls)
                + self.extra_steps)


def reply_prefix(reply: Reply, steps: int) -> Reply:
    """What of ``reply`` was emitted in its first ``steps`` token steps (a cut-off's partial
    output): reasoning first, then content, then tool calls (two steps each, as streamed)."""
    steps = max(0, steps)
    reasoning = reply.reasoning[:steps]
    steps -= len(reasoning)
    content = reply.content[:steps]
    steps -= len(content)
    calls = reply.tool_calls[: steps // 2]
    return Reply(reasoning=reasoning, content=content, tool_calls=calls,
                 finish_reason=reply.finish_reason, prompt_tokens=reply.prompt_tokens)


def seeded_rng(*parts: object) -> random.Random:
    """A private RNG whose stream depends only on ``parts`` (stable across processes)."""
    digest = hashlib.sha256("\x1f".join(repr(p) for p in parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def message_text(content: Any) -> str:
    """Text of an OpenAI message ``content`` (a string, None, or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, Mapping):
                value = part.get("text", part.get("content", ""))
                texts.append(value if isinstance(value, str) else "")
            elif isinstance(part, str):
                texts.append(part)
        return "\n".join(texts)
    return str(content)


def prompt_text(messages: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join(f"{m.get('role', '')}: {message_text(m.get('content'))}" for m in messages)


def count_prompt_tokens(text: str, messages: int = 1) -> int:
    """A stable token estimate (~4 characters a token plus a per-message template cost)."""
    return max(1, math.ceil(len(text) / 4) + 4 * messages)


def tokenize(text: str) -> tuple[str, ...]:
    """Split text into token-sized pieces whose concatenation is exactly ``text``."""
    pieces = tuple(_TOKEN_PIECES.findall(text))
    assert "".join(pieces) == text, "tokenizer must be lossless"
    return pieces


def _words(rng: random.Random, n: int, cap: int | None = None) -> list[str]:
    """``n`` words of text; with ``cap`` only the first ``cap`` of them (same prefix)."""
    tokens: list[str] = []
    sentence_start = True
    words = VOCABULARY.get()
    count = len(words)
    rand = rng.random
    for i in range(n if cap is None else min(n, cap)):
        word = words[int(rand() * count)]
        if sentence_start:
            word = word.capitalize()
        end = i == n - 1 or rand() < 0.09
        tokens.append(("" if i == 0 else " ") + word + ("." if end else ""))
        sentence_start = end
    return tokens


def _apply_stop(tokens: list[str], stop: Sequence[str]) -> list[str]:
    """Cut the text where the first stop string starts (the stop string itself is not sent).

    A stop hit finishes with "stop", like the natural end of the text."""
    if not stop:
        return tokens
    text = "".join(tokens)
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    if cut < 0:
        return tokens
    kept: list[str] = []
    used = 0
    for tok in tokens:
        if used + len(tok) <= cut:
            kept.append(tok)
            used += len(tok)
        else:
            if cut > used:
                kept.append(tok[: cut - used])
            break
    return kept


@dataclass(frozen=True)
class ChatRequest:
    """The parts of a chat request that decide its reply."""

    messages: tuple[Mapping[str, Any], ...]
    seed: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: Any = None
    json_schema: Mapping[str, Any] | None = None
    reasoning_on: bool = True


def _scripted_tool_answer(
    request: ChatRequest, rng: random.Random
) -> tuple[list[PlannedToolCall] | None, str | None]:
    """The contract's ``[[tools: ...]]`` directive: tool calls for round r, or the final text."""
    messages = request.messages
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    if last_user < 0:
        return None, None
    text = message_text(messages[last_user].get("content"))
    match = TOOLS_DIRECTIVE.search(text)
    if match is None:
        return None, None
    try:
        rounds, _ = json.JSONDecoder().raw_decode(text, match.end())
    except json.JSONDecodeError:
        return None, None
    if not isinstance(rounds, list) or not all(isinstance(r, list) for r in rounds):
        return None, None
    for rnd in rounds:
        for call in rnd:
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                return None, None
    after = messages[last_user + 1 :]
    r = sum(1 for m in after if m.get("role") == "assistant" and m.get("tool_calls"))
    if r < len(rounds):
        calls = [
            PlannedToolCall(
                id=str(rng.randrange(100_000_000, 1_000_000_000)),
                name=call["name"],
                arguments=json.dumps(call.get("arguments", {}), separators=(",", ":")),
            )
            for call in rounds[r]
        ]
        return calls, None
    results = " | ".join(message_text(m.get("content")) for m in after if m.get("role") == "tool")
    return None, f"Done after {r} round(s). Tool results: {results}"


def _review_text(spec: ModelSpec, request: ChatRequest, response_format: Any) -> str | None:
    """The reviewer models' answer when this is a review prompt (``harness.studio.reviewer``,
    imported here because it imports this module)."""
    from harness.studio import reviewer

    messages = [dict(m) for m in request.messages]
    if not reviewer.is_review_request(messages):
        return None
    return str(reviewer.answer_review(spec.key, messages, response_format, request.seed))


def plan_chat_reply(
    spec: ModelSpec,
    request: ChatRequest,
    reply_tokens: tuple[int, int],
    response_format: Mapping[str, Any] | None = None,
) -> Reply:
    """Decide the reply of ``spec`` to a chat request (deterministic)."""
    prompt = prompt_text(request.messages)
    rng = seeded_rng(spec.key, prompt, request.seed)
    prompt_tokens = count_prompt_tokens(prompt, len(request.messages))
    reasoning: list[str] = []
    if spec.reasoning is not None and request.reasoning_on:
        reasoning = _words(rng, rng.randint(6, 16))

    calls, scripted_text = _scripted_tool_answer(request, rng)
    if calls is not None and request.tool_choice != "none":
        arg_tokens = sum(len(tokenize(c.arguments)) + 2 for c in calls)
        return Reply(
            reasoning=tuple(reasoning),
            tool_calls=tuple(calls),
            finish_reason="tool_calls",
            prompt_tokens=prompt_tokens,
            hidden_tokens=arg_tokens,
        )
    if scripted_text is not None:
        content = list(tokenize(scripted_text))
    elif (review := _review_text(spec, request, response_format)) is not None:
        content = list(tokenize(review))
    elif request.json_schema is not None:
        value = value_for_schema(request.json_schema, rng)
        content = list(tokenize(json.dumps(value, ensure_ascii=False)))
    else:
        lo, hi = reply_tokens
        cap = None if request.max_tokens is None or request.stop else request.max_tokens + 1
        content = _words(rng, rng.randint(lo, max(lo, hi)), cap)
        content = _apply_stop(content, request.stop)
    if spec.reasoning == "reasoning_content" and reasoning:
        content = ["\n\n", *content]

    finish = "stop"
    limit = request.max_tokens
    if limit is not None and limit >= 0 and len(reasoning) + len(content) > limit:
        keep_reasoning = min(len(reasoning), limit)
        content = content[: limit - keep_reasoning]
        reasoning = reasoning[:keep_reasoning]
        finish = "length"
    return Reply(
        reasoning=tuple(reasoning),
        content=tuple(content),
        finish_reason=finish,
        prompt_tokens=prompt_tokens,
    )


def plan_text_reply(
    spec: ModelSpec,
    prompt: str,
    *,
    seed: int | None,
    max_tokens: int | None,
    stop: tuple[str, ...],
    reply_tokens: tuple[int, int],
) -> Reply:
    """Legacy ``/v1/completions``: no template, no reasoning, no tools."""
    rng = seeded_rng(spec.key, "completion", prompt, seed)
    lo, hi = reply_tokens
    content = _words(rng, rng.randint(lo, max(lo, hi)))
    content = _apply_stop(content, stop)
    finish = "stop"
    if max_tokens is not None and 0 <= max_tokens < len(content):
        content, finish = content[:max_tokens], "length"
    return Reply(
        content=tuple(content),
        finish_reason=finish,
        prompt_tokens=count_prompt_tokens(prompt),
    )


def embedding_vector(model: str, text: str, dims: int) -> list[float]:
    """A deterministic unit vector for ``text`` (equal texts embed equally)."""
    rng = seeded_rng("embedding", model, text)
    raw = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


# ---------------------------------------------------------------------------------------------
# JSON Schema -> a value valid for it. Covers what structured-output schemas use in practice:
# type (incl. lists), enum, const, properties/required, items/prefixItems, min/max bounds,
# string formats, anyOf/oneOf/allOf and local $ref. ``pattern`` is not solved (see report).


class SchemaUnsupported(ValueError):
    """The schema uses a construct the emulator cannot satisfy."""


def value_for_schema(schema: Mapping[str, Any], rng: random.Random) -> Any:
    return _value(schema, rng, schema, depth=0)


def _resolve_ref(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    if not ref.startswith("#/"):
        raise SchemaUnsupported(f"only local $ref is supported, got {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            raise SchemaUnsupported(f"$ref {ref!r} does not resolve")
        node = node[part]
    if not isinstance(node, Mapping):
        raise SchemaUnsupported(f"$ref {ref!r} is not a schema")
    return node


def _merge_all_of(schema: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for sub in schema.get("allOf", []):
        if "$ref" in sub:
            sub = _resolve_ref(sub["$ref"], root)
        for key, value in sub.items():
            if key == "properties":
                merged.setdefault("properties", {}).update(value)
            elif key == "required":
                merged["required"] = sorted({*merged.get("required", []), *value})
            else:
                merged.setdefault(key, value)
    return merged


def _string(schema: Mapping[str, Any], rng: random.Random) -> str:
    fmt = schema.get("format")
    samples = {
        "date-time": "2026-01-15T12:00:00Z",
        "date": "2026-01-15",
        "time": "12:00:00Z",
        "email": "reviewer@example.com",
        "uri": "https://example.com/item",
        "uuid": "123e4567-e89b-42d3-a456-426614174000",
    }
    lo = int(schema.get("minLength", 0))
    hi = int(schema.get("maxLength", max(lo, 40)))
    if fmt in samples and lo <= len(samples[fmt]) <= hi:
        return samples[fmt]
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))
    if len(text) < lo:
        text = (text + " " + "x" * lo)[:lo]
    return text[:hi]


def _number(schema: Mapping[str, Any], rng: random.Random, integer: bool) -> float | int:
    lo = schema.get("minimum")
    hi = schema.get("maximum")
    xlo = schema.get("exclusiveMinimum")
    xhi = schema.get("exclusiveMaximum")
    low = -100.0 if lo is None else float(lo)
    high = 100.0 if hi is None else float(hi)
    if xlo is not None and not isinstance(xlo, bool):
        low = max(low, float(xlo) + (1 if integer else 1e-6))
    if xhi is not None and not isinstance(xhi, bool):
        high = min(high, float(xhi) - (1 if integer else 1e-6))
    if lo is not None and hi is None and xhi is None:
        high = float(low) + 100
    if hi is not None and lo is None and xlo is None:
        low = high - 100
    multiple = schema.get("multipleOf")
    if integer:
        ilo, ihi = math.ceil(low), math.floor(high)
        if ilo > ihi:
            raise SchemaUnsupported(f"no integer in [{low}, {high}]")
        if multiple:
            m = int(multiple)
            first = math.ceil(ilo / m) * m
            if first > ihi:
                raise SchemaUnsupported(f"no multiple of {m} in [{ilo}, {ihi}]")
            return first + m * rng.randint(0, (ihi - first) // m)
        return rng.randint(ilo, ihi)
    if low > high:
        raise SchemaUnsupported(f"empty number range [{low}, {high}]")
    if multiple:
        unit = float(multiple)
        k_first = math.ceil(low / unit)
        k_last = math.floor(high / unit)
        if k_first > k_last:
            raise SchemaUnsupported(f"no multiple of {unit} in [{low}, {high}]")
        return rng.randint(k_first, k_last) * unit
    return round(rng.uniform(low, high), 3) if high - low > 0.01 else low


def _value(schema: Any, rng: random.Random, root: Mapping[str, Any], depth: int) -> Any:
    if schema is True or schema is None or schema == {}:
        return rng.choice(WORDS)
    if schema is False:
        raise SchemaUnsupported("schema `false` accepts no value")
    if not isinstance(schema, Mapping):
        raise SchemaUnsupported(f"schema must be an object, got {type(schema).__name__}")
    if depth > 12:
        raise SchemaUnsupported("schema nests deeper than 12 levels")
    if "$ref" in schema:
        return _value(_resolve_ref(schema["$ref"], root), rng, root, depth + 1)
    if "allOf" in schema:
        return _value(_merge_all_of(schema, root), rng, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(list(schema["enum"]))
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = list(schema[key])
            pick = options[0] if key == "oneOf" else rng.choice(options)
            return _value(pick, rng, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props: Mapping[str, Any] = schema.get("properties", {})
        out: dict[str, Any] = {}
        for name, sub in props.items():
            out[name] = _value(sub, rng, root, depth + 1)
        for name in schema.get("required", []):
            if name not in out:
                extra = schema.get("additionalProperties", True)
                sub = extra if isinstance(extra, Mapping) else {}
                out[name] = _value(sub, rng, root, depth + 1)
        return out
    if kind == "array":
        prefix = list(schema.get("prefixItems", []))
        lo = int(schema.get("minItems", 0))
        hi = int(schema.get("maxItems", max(lo, 3)))
        n = max(len(prefix), min(hi, max(lo, rng.randint(1, 3))))
        items = schema.get("items", {})
        values = [_value(prefix[i], rng, root, depth + 1) for i in range(min(n, len(prefix)))]
        tries = 0
        while len(values) < n:
            candidate = _value(items, rng, root, depth + 1)
            if schema.get("uniqueItems") and candidate in values:
                tries += 1
                if tries > 50:
                    raise SchemaUnsupported("cannot produce enough unique items")
                continue
            values.append(candidate)
        return values
    if kind == "string":
        return _string(schema, rng)
    if kind == "integer":
        return _number(schema, rng, integer=True)
    if kind == "number":
        return _number(schema, rng, integer=False)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    raise SchemaUnsupported(f"unknown schema type {kind!r}")
