"""Pure request builders: endpoint arguments in, one validated, frozen ``Call`` out. No I/O.

Every rule about what goes on the wire lives here once, for ``Client``, ``AsyncClient`` and the
Locust user alike: the model resolved when the call starts (explicit argument, then the view's
pinned model, then the client's default at that instant), ``stream`` and ``stream_options``, the
``X-Request-Id`` (a UUID: llama.cpp's server refuses other shapes with a 400), the headers. A bad
argument fails here, before any socket is touched, identically in every shell.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from harness import __version__
from harness.client.errors import RequestContext, ValidationError
from harness.client.validation import validate_messages, validate_model_id, validate_params

StreamKind = Literal["chat", "native", "messages"]

#: What the call layer can decode itself (``stream.ContentDecoder``), so what we advertise.
ACCEPT_ENCODING = "gzip, deflate"


@dataclass(frozen=True, slots=True)
class Call:
    """One prepared call: immutable, so a retry or a model switch can never change its model.

    ``stream`` names the assembler a streamed call needs (``chat`` for the OpenAI-compatible
    endpoints, ``native`` for ``/api/v1/chat``), ``None`` for a plain JSON answer.
    ``tools_offered`` lets the answer check flag a tool call that came back as text.
    """

    method: str
    url: str
    model: str | None
    body: bytes | None
    headers: Mapping[str, str]
    request_id: str
    stream: StreamKind | None = None
    tools_offered: bool = False

    @property
    def path(self) -> str:
        return "/" + self.url.split("://", 1)[-1].partition("/")[2]

    def context(self, attempt: int, max_attempts: int, elapsed: float,
                waited: float = 0.0) -> RequestContext:
        return RequestContext(self.method, self.url, self.model, attempt, max_attempts, elapsed,
                              self.request_id, waited)


def new_request_id() -> str:
    """Sent as ``X-Request-Id`` and named in every error, the same for every retry of a call,
    so a failure can be found in the server's log or the emulator's truth."""
    return str(uuid.uuid4())


def base_headers(api_token: str | None) -> dict[str, str]:
    """Headers every request of a client carries."""
    headers = {"user-agent": f"lmstudio-harness/{__version__}", "accept": "application/json",
               "accept-encoding": ACCEPT_ENCODING}
    if api_token:
        headers["authorization"] = f"Bearer {api_token}"
    return headers


def encode(payload: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ValidationError("request", f"not JSON-serialisable: {exc}") from None


def prepare(base_url: str, method: str, path: str, *, payload: dict[str, Any] | None = None,
            model: str | None = None, needs_model: bool = False,
            stream: StreamKind | None = None, request_id: str | None = None) -> Call:
    """Validate and freeze one call. ``model`` is the already resolved model (see ``resolve``)."""
    body = None
    if payload is not None:
        if needs_model:
            if model is None:
                raise ValidationError("model", "no model given and the client has no default")
            payload = {"model": model, **payload}
        if stream:
            payload["stream"] = True
        body = encode(payload)
    request_id = request_id or new_request_id()
    headers = {"x-request-id": request_id}
    if body is not None:
        headers["content-type"] = "application/json"
    if stream:
        headers["accept"] = "text/event-stream"
    tools = bool(payload and payload.get("tools"))
    return Call(method, base_url + path, model, body, headers, request_id, stream, tools)


def resolve(explicit: str | None, pinned: str | None, default: str | None) -> str | None:
    """The model a call starts with: explicit argument, then the view's pin, then the default."""
    if explicit is not None:
        validate_model_id(explicit)
    return explicit or pinned or default


def chat(base_url: str, messages: Any, model: str | None, params: dict[str, Any], *,
         stream: bool = False, include_usage: bool = True) -> Call:
    """``POST /v1/chat/completions``; a stream asks for usage in its last chunk."""
    msgs = validate_messages(messages)
    validate_params(params)
    params = {k: v for k, v in params.items() if v is not None and k != "stream"}
    payload = {"messages": msgs, **params}
    if stream and include_usage:
        payload.setdefault("stream_options", {"include_usage": True})
    return prepare(base_url, "POST", "/v1/chat/completions", payload=payload, model=model,
                   needs_model=True, stream="chat" if stream else None)


def completion(base_url: str, prompt: Any, model: str | None, params: dict[str, Any],
               stream: bool) -> Call:
    if not isinstance(prompt, str) or not prompt:
        raise ValidationError("prompt", "must be a non-empty string")
    validate_params(params)
    payload = {"prompt": prompt, **{k: v for k, v in params.items() if v is not None}}
    return prepare(base_url, "POST", "/v1/completions", payload=payload, model=model,
                   needs_model=True, stream="chat" if stream else None)


def embeddings(base_url: str, inputs: Any, model: str | None) -> Call:
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise ValidationError("input", "must be a string or a non-empty list of strings")
    return prepare(base_url, "POST", "/v1/embeddings", payload={"input": inputs}, model=model,
                   needs_model=True)


def responses(base_url: str, input: Any, model: str | None, previous_response_id: str | None,
              params: dict[str, Any]) -> Call:
    if not input:
        raise ValidationError("input", "must not be empty")
    validate_params(params)
    payload: dict[str, Any] = {"input": input, **params}
    if previous_response_id is not None:
        if not isinstance(previous_response_id, str) or not previous_response_id:
            raise ValidationError("previous_response_id", "must be a non-empty string")
        payload["previous_response_id"] = previous_response_id
    return prepare(base_url, "POST", "/v1/responses", payload=payload, model=model,
                   needs_model=True)


def native_chat(base_url: str, input: Any, model: str | None, params: dict[str, Any],
                stream: bool) -> Call:
    if not input:
        raise ValidationError("input", "must not be empty")
    validate_params(params)
    return prepare(base_url, "POST", "/api/v1/chat", payload={"input": input, **params},
                   model=model, needs_model=True, stream="native" if stream else None)


def load_model(base_url: str, model: str, config: dict[str, Any]) -> Call:
    validate_model_id(model)
    return prepare(base_url, "POST", "/api/v1/models/load", payload=dict(config), model=model,
                   needs_model=True)


def unload_model(base_url: str, instance_id: str) -> Call:
    validate_model_id(instance_id, "instance_id")
    return prepare(base_url, "POST", "/api/v1/models/unload",
                   payload={"instance_id": instance_id})


def get(base_url: str, path: str) -> Call:
    return prepare(base_url, "GET", path)
