"""The client against the embedded emulator: every endpoint family, over real loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness import AsyncClient, Client
from harness.client.errors import ModelMismatch, ModelNotFound
from harness.client.models import ProgressEvent, ReasoningDelta, TextDelta, ToolCallDelta
from harness.studio.testing import StudioHandle, running_studio

SMALL = "qwen/qwen3-4b"
MSG = [{"role": "user", "content": "Say something short."}]


@pytest.fixture(scope="module")
def studio() -> Iterator[StudioHandle]:
    with running_studio(preload=(SMALL,)) as handle:
        yield handle


@pytest.fixture
def client(studio: StudioHandle) -> Iterator[Client]:
    with Client(studio.base_url, model=SMALL, timeout=30) as c:
        yield c


def test_chat_stream_and_nonstream_agree(client: Client) -> None:
    plain = client.chat(MSG, seed=7, max_tokens=24)
    with client.stream_chat(MSG, seed=7, max_tokens=24) as stream:
        deltas = [e for e in stream if isinstance(e, TextDelta)]
        streamed = stream.result()
    assert streamed.text == plain.text == "".join(d.text for d in deltas)
    assert streamed.finish_reason == plain.finish_reason
    assert streamed.usage is not None and streamed.usage.completion_tokens > 0
    assert streamed.timings.ttft is not None and streamed.timings.ttft > 0


def test_reasoning_models(client: Client) -> None:
    for model in ("qwen/qwen3-4b-thinking-2507", "openai/gpt-oss-20b"):
        with client.stream_chat(MSG, model=model, max_tokens=32) as stream:
            kinds = {type(e) for e in stream}
            result = stream.result()
        assert ReasoningDelta in kinds and result.reasoning


def test_tool_calls_assemble(client: Client) -> None:
    tools = [{"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "properties": {"a": {"type": "number"}}}}}]
    directive = '[[tools: [[{"name": "add", "arguments": {"a": 2}}]]]]'
    prompt = [{"role": "user", "content": f"Add. {directive}"}]
    with client.stream_chat(prompt, tools=tools) as stream:
        assert any(isinstance(e, ToolCallDelta) for e in stream)
        result = stream.result()
    assert result.finish_reason == "tool_calls"
    call = result.tool_calls[0]
    assert call.name == "add" and call.parsed_arguments() == {"a": 2}


def test_completions_embeddings_responses(client: Client) -> None:
    assert client.complete("Once upon a time", max_tokens=8).text
    with client.stream_complete("Once upon a time", max_tokens=8) as stream:
        assert stream.result().text
    vectors = client.embed(["a", "b"], model="text-embedding-nomic-embed-text-v1.5").vectors
    assert len(vectors) == 2 and abs(sum(x * x for x in vectors[0]) - 1) < 1e-6
    first = client.respond("Remember the word kiwi.")
    second = client.respond("What word?", previous_response_id=first.id)
    assert first.id.startswith("resp_") and second.id != first.id and second.text


def test_listings_load_unload(client: Client) -> None:
    ids = {m.id for m in client.list_models()}
    assert SMALL in ids
    native = {m.id: m for m in client.native_models()}
    assert native[SMALL].loaded_instances
    assert {m.id for m in client.v0_models()} >= {SMALL}
    loaded = client.load_model("google/gemma-3-12b")
    assert loaded["status"] == "loaded"
    client.unload_model(loaded["instance_id"])
    assert not {m.id: m for m in client.native_models()}["google/gemma-3-12b"].loaded_instances


def test_native_chat(client: Client) -> None:
    result = client.native_chat("Hello there", max_output_tokens=16)
    assert result.text and result.model
    with client.stream_native_chat("Hello there", max_output_tokens=16) as stream:
        events = list(stream)
        streamed = stream.result()
    assert any(isinstance(e, TextDelta) for e in events)
    assert any(isinstance(e, ProgressEvent) for e in events) or streamed.text
    assert streamed.text


def test_unknown_model_invalidates_catalog(client: Client) -> None:
    client.catalog.models()
    assert client.catalog.age is not None
    with pytest.raises((ModelNotFound, ModelMismatch)):
        client.chat(MSG, model="nobody/no-such-model")
    # 404 model_not_found invalidates the catalog; a substitution (one model loaded) is a mismatch
    with pytest.raises(ModelNotFound) as info:
        client.catalog.validate_model("qwen/qwen3-4c")
    assert SMALL in info.value.available


async def test_async_client_against_emulator(studio: StudioHandle) -> None:
    async with AsyncClient(studio.base_url, model=SMALL, timeout=30) as c:
        plain = await c.chat(MSG, seed=3, max_tokens=16)
        async with c.stream_chat(MSG, seed=3, max_tokens=16) as stream:
            async for _ in stream:
                pass
            assert (await stream.result()).text == plain.text
        assert await c.catalog.avalidate_model(SMALL)


def test_catalog_over_the_native_listing(client: Client) -> None:
    """The catalog takes any listing: the native one adds type and loaded instances."""
    from harness.client.catalog import ModelCatalog

    native = ModelCatalog(fetch=client.native_models, ttl=60)
    entry = native.validate_model(SMALL)
    assert entry.type == "llm" and entry.loaded_instances
    assert native.get("text-embedding-nomic-embed-text-v1.5").type == "embedding"  # type: ignore[union-attr]
