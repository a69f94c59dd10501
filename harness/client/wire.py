"""Decoding of the non-chat response bodies (model listings, embeddings, responses).

Kept apart from ``protocol`` because these are plain JSON bodies with no stream semantics; like
``protocol`` they are pure functions, shared by both shells.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from harness.client.errors import BadResponse, RequestContext
from harness.client.models import Embeddings, ModelInfo, ResponseResult
from harness.client.protocol import _usage, check_model


def parse_model_list(ctx: RequestContext, body: dict[str, Any]) -> list[ModelInfo]:
    """``/v1/models`` and ``/api/v0/models`` (``data``) and ``/api/v1/models`` (``models``)."""
    items = body.get("data")
    native = False
    if items is None:
        items, native = body.get("models"), True
    if not isinstance(items, list):
        raise BadResponse("model listing has neither 'data' nor 'models' list", context=ctx)
    out = []
    for item in items:
        if not isinstance(item, dict):
            continue
        if native:
            item = {**item, "id": item.get("key") or item.get("id")}
            item.setdefault("state", "loaded" if item.get("loaded_instances") else "not-loaded")
        if item.get("id"):
            try:
                out.append(ModelInfo.model_validate(item))
            except ValidationError as exc:
                raise BadResponse(f"malformed model entry {item.get('id')!r}: "
                                  f"{exc.errors()[0]['loc']} {exc.errors()[0]['msg']}",
                                  context=ctx) from None
    return out


def embeddings_result(ctx: RequestContext, body: dict[str, Any]) -> Embeddings:
    data = body.get("data")
    if not isinstance(data, list):
        raise BadResponse("embeddings response has no 'data' list", context=ctx)
    vectors = [item.get("embedding") for item in sorted(data, key=lambda d: d.get("index", 0))]
    if not all(isinstance(v, list) for v in vectors):
        raise BadResponse("an embedding is not a list of numbers", context=ctx)
    model = body.get("model") or ""
    check_model(ctx, model)
    return Embeddings(model=model, vectors=vectors, usage=_usage(body.get("usage")))


def response_result(ctx: RequestContext, body: dict[str, Any]) -> ResponseResult:
    if not isinstance(body.get("id"), str):
        raise BadResponse("responses body has no 'id'", context=ctx)
    text = body.get("output_text")
    if not isinstance(text, str):
        parts = []
        for item in body.get("output") or ():
            for content in item.get("content") or ():
                if isinstance(content, dict) and content.get("type") == "output_text":
                    parts.append(content.get("text") or "")
        text = "".join(parts)
    model = body.get("model") or ""
    check_model(ctx, model)
    return ResponseResult(id=body["id"], text=text, model=model, status=body.get("status"),
                          usage=body.get("usage"))
