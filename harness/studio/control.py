"""``/_harness/`` control endpoints: ground truth, counters, fault plan, reset, engine state.

Mounted only with ``--control`` (always in the test handle). They never count towards the truth
they report. With an API token configured they require it, like the API does: a control surface
that resets the server, reads every request's truth or sets faults is at least as sensitive as the
API itself. Without a token they are open, like the API.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from harness.faults import FaultPlan

Endpoint = Callable[[Request], Awaitable[Response]]


def _authorized(token: str, authorization: str | None) -> bool:
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), token.encode())


def _require(token: str | None, endpoint: Endpoint) -> Endpoint:
    if not token:
        return endpoint

    async def guarded(request: Request) -> Response:
        if not _authorized(token, request.headers.get("authorization")):
            return JSONResponse({"error": {
                "message": "the /_harness/ control endpoints require the API token "
                           "(Authorization: Bearer <token>)",
                "type": "invalid_request_error", "code": "unauthorized"}}, 401)
        return await endpoint(request)

    return guarded


def routes(state: Any, *, api_token: str | None = None) -> list[BaseRoute]:
    """Control routes over a ``StudioState`` (or the proxy's state: same attribute names);
    with ``api_token`` every one of them requires ``Authorization: Bearer <api_token>``."""

    async def truth(request: Request) -> JSONResponse:
        since = request.query_params.get("since", "0")
        limit = request.query_params.get("limit", "")
        if not since.isdigit():
            return JSONResponse({"error": "'since' must be a non-negative integer"}, 400)
        if limit and not (limit.isdigit() and int(limit) > 0):
            return JSONResponse({"error": "'limit' must be a positive integer"}, 400)
        found = state.engine.truth.records(int(since))
        page = found[:int(limit)] if limit else found  # pages: a long run's truth is 10s of MB
        return JSONResponse({"records": [r.as_dict() for r in page],
                             "more": len(page) < len(found),
                             "last_id": state.engine.truth.last_id})

    async def counters(request: Request) -> JSONResponse:
        return JSONResponse(
            {"endpoints": {k: v.as_dict() for k, v in state.engine.counters.items()}}
        )

    async def faults(request: Request) -> JSONResponse:
        if request.method == "DELETE":
            state.set_faults(None)
            return JSONResponse({"faults": None})
        if request.method in ("PUT", "POST"):
            try:
                plan = FaultPlan.model_validate_json(await request.body())
            except ValidationError as exc:
                return JSONResponse({"error": f"invalid fault plan: {exc}"}, 400)
            state.set_faults(plan)
        injector = state.injector
        return JSONResponse({
            "faults": None if injector is None else injector.plan.model_dump(mode="json"),
            "stats": [] if injector is None else injector.stats(),
        })

    async def reset(request: Request) -> JSONResponse:
        await state.reset()
        return JSONResponse({"reset": True})

    async def engine_state(request: Request) -> JSONResponse:
        return JSONResponse(state.engine.state())

    def guard(endpoint: Endpoint) -> Endpoint:
        return _require(api_token, endpoint)

    return [
        Route("/_harness/truth", guard(truth), methods=["GET"]),
        Route("/_harness/counters", guard(counters), methods=["GET"]),
        Route("/_harness/faults", guard(faults), methods=["GET", "PUT", "POST", "DELETE"]),
        Route("/_harness/reset", guard(reset), methods=["POST"]),
        Route("/_harness/state", guard(engine_state), methods=["GET"]),
    ]
