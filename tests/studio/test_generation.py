"""Properties of the pure generation functions (determinism, limits, schema validity)."""

from __future__ import annotations

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.studio.catalog import load_catalog
from harness.studio.generation import (
    ChatRequest,
    plan_chat_reply,
    seeded_rng,
    tokenize,
    value_for_schema,
)

_SPEC = load_catalog().get("qwen/qwen3-4b")
assert _SPEC is not None
SPEC = _SPEC  # narrowed at module level, so mypy sees ModelSpec inside the tests too

texts = st.text(min_size=1, max_size=80)


@given(texts, st.integers(0, 2**31), st.none() | st.integers(0, 80))
def test_same_inputs_same_reply_and_limits(prompt: str, seed: int, limit: int | None) -> None:
    req = ChatRequest(messages=({"role": "user", "content": prompt},), seed=seed, max_tokens=limit)
    a = plan_chat_reply(SPEC, req, (24, 64))
    assert a == plan_chat_reply(SPEC, req, (24, 64))
    if limit is not None:
        assert a.completion_tokens <= limit
        assert a.finish_reason == ("length" if a.completion_tokens == limit and limit < 24
                                   else a.finish_reason)


@given(st.text(max_size=200))
def test_tokenize_is_lossless(text: str) -> None:
    assert "".join(tokenize(text)) == text


leaf = st.one_of(
    st.just({"type": "string"}),
    st.builds(lambda lo, extra: {"type": "string", "minLength": lo, "maxLength": lo + extra},
              st.integers(0, 10), st.integers(0, 10)),
    st.builds(lambda lo, extra: {"type": "integer", "minimum": lo, "maximum": lo + extra},
              st.integers(-50, 50), st.integers(0, 20)),
    st.just({"type": "number", "exclusiveMinimum": 0, "maximum": 1}),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.lists(st.text(max_size=5), min_size=1, max_size=4).map(lambda e: {"enum": e}),
    st.just({"type": "string", "format": "date-time"}),
)
schemas = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=4).map(
            lambda p: {"type": "object", "properties": p, "required": sorted(p)}),
        st.builds(lambda items, lo: {"type": "array", "items": items, "minItems": lo,
                                     "maxItems": lo + 2}, inner, st.integers(0, 3)),
        st.lists(inner, min_size=1, max_size=3).map(lambda o: {"anyOf": o}),
    ),
    max_leaves=10,
)


@settings(max_examples=150)
@given(schemas, st.integers(0, 1000))
def test_generated_json_is_valid_for_schema(schema: dict, seed: int) -> None:
    value = value_for_schema(schema, seeded_rng(seed))
    jsonschema.validate(value, schema)
