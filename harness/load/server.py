"""Talking to the target server around a load run: reachability, preload, metadata, faults, truth.

These are a handful of plain JSON calls made once per run (not on the hot path), so they use
httpx directly. What they learn goes into the run metadata: LM Studio's runtime version (from the
``/api/v0`` non-stream reply's ``runtime``), each model's quantisation and the ``parallel`` value
actually in force (``loaded_instances[].config.parallel`` of ``/api/v1/models``).

The ``/_harness/`` control endpoints (``harness.control``) exist only on the emulator and the
fault proxy; on a real LM Studio they answer 200 ``{"error": "Unexpected endpoint or method..."}``,
which is read as "no ground truth here", never as data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import httpx

from harness.client.errors import redact
from harness.control import ControlClient, ControlError

logging.getLogger("httpx").setLevel(logging.WARNING)

TRUTH_PAGE = 500  # records per truth page: ~0.5 MB at 20 tokens/s, bounded whatever the run


def api_token_for(scenario: Any) -> str | None:
    """The token a run sends: the variable the scenario names (``request.api_token_env``), else
    ``HARNESS_API_TOKEN`` (or its aliases) as every other harness command reads it
    (``harness.secrets``); None when neither is set. Registered for redaction either way."""
    import os

    from harness.secrets import register, token_from_env

    name = scenario.request.api_token_env
    return register(os.environ.get(name) or None) if name else token_from_env()


class LoadRunError(RuntimeError):
    """A load run could not start or had to stop (names the URL, worker or file involved)."""


class TargetUnreachable(LoadRunError):
    """The target did not answer, or refused the run (connection error, HTTP 401...): a target
    error (exit 4), not a harness error."""


@dataclass
class ServerInfo:
    base_url: str
    runtime: dict[str, Any] | None = None
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    has_control: bool = False
    truth_since: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "runtime": self.runtime, "models": self.models,
                "has_control": self.has_control}


class ServerSession:
    """A short-lived client for the run's setup and wrap-up calls."""

    def __init__(self, base_url: str, *, api_token: str | None = None, timeout: float = 10.0
                 ) -> None:
        headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}
        self.base_url = base_url.rstrip("/")
        self._secrets = (api_token,) if api_token else ()
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self._control = ControlClient(self.base_url, api_token=api_token, timeout=timeout)

    def close(self) -> None:
        self._http.close()
        self._control.close()

    def __enter__(self) -> ServerSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: Any = None, *, optional: bool = False) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise LoadRunError(
                redact(f"{method} {self.base_url}{path}: server unreachable ({exc!r})",
                       self._secrets)
            ) from None
        if response.status_code in (404, 405) and optional:
            return None  # an LM Studio-only endpoint this server lacks (llama.cpp, vLLM ...)
        if response.status_code >= 400:
            raise LoadRunError(redact(
                f"{method} {self.base_url}{path}: HTTP {response.status_code}: "
                f"{response.text[:300]}", self._secrets))
        try:
            return response.json()
        except ValueError:
            raise LoadRunError(f"{method} {self.base_url}{path}: answer is not JSON: "
                               f"{response.text[:200]!r}") from None

    def check_reachable(self) -> None:
        """``GET /v1/models`` with the run's token; any failure is a ``TargetUnreachable``."""
        try:
            self._call("GET", "/v1/models")
        except LoadRunError as exc:
            raise TargetUnreachable(str(exc)) from None

    def preload(self, model: str, ttl_s: int | None) -> dict[str, Any]:
        """Load ``model`` (JIT) with a long ``ttl`` by one tiny non-stream ``/api/v0`` request,
        which also reports ``runtime`` and ``model_info``."""
        body: dict[str, Any] = {"model": model, "stream": False, "max_tokens": 1,
                                "messages": [{"role": "user", "content": "ping"}]}
        if ttl_s is not None:
            body["ttl"] = ttl_s
        answer = self._call("POST", "/api/v0/chat/completions", body, optional=True)
        if answer is None:  # no native API: the same tiny request on the OpenAI endpoint
            body.pop("ttl", None)
            answer = self._call("POST", "/v1/chat/completions", body)
        if isinstance(answer, dict) and answer.get("error"):
            raise LoadRunError(f"preloading {model!r} at {self.base_url} failed: "
                               f"{answer['error']}")
        return answer if isinstance(answer, dict) else {}

    def model_metadata(self) -> dict[str, dict[str, Any]]:
        """Per model key: quantisation, state and ``parallel`` of each loaded instance."""
        out: dict[str, dict[str, Any]] = {}
        listing = self._call("GET", "/api/v1/models", optional=True)
        for item in listing.get("models") or () if isinstance(listing, dict) else ():
            key = item.get("key")
            if not key:
                continue
            quant = item.get("quantization")
            out[key] = {
                "quantization": quant.get("name") if isinstance(quant, dict) else quant,
                "parallel": [
                    (inst.get("config") or {}).get("parallel")
                    for inst in item.get("loaded_instances") or ()
                ],
                "loaded_instances": len(item.get("loaded_instances") or ()),
            }
        return out

    def control_available(self) -> bool:
        return self._control.available()

    def truth(self, since: int = 0) -> list[dict[str, Any]]:
        """The truth of every request after ``since``, in pages of ``TRUTH_PAGE`` records."""
        try:
            return self._control.truth(since, page=TRUTH_PAGE)
        except ControlError as exc:
            raise LoadRunError(str(exc)) from None

    def truth_last_id(self) -> int:
        try:
            return self._control.truth_last_id()
        except ControlError as exc:
            raise LoadRunError(str(exc)) from None

    def set_faults(self, plan: dict[str, Any] | None) -> None:
        try:
            if plan is None:
                self._control.clear_faults()
            else:
                self._control.set_faults(plan)
        except ControlError as exc:
            raise LoadRunError(str(exc)) from None


def prepare_server(base_url: str, *, models: tuple[str, ...], ttl_s: int | None,
                   preload: bool, faults: dict[str, Any] | None,
                   api_token: str | None = None) -> ServerInfo:
    """Everything done before t0: reachability, preload, metadata, fault plan, truth marker."""
    info = ServerInfo(base_url=base_url)
    with ServerSession(base_url, api_token=api_token) as session:
        session.check_reachable()
        info.has_control = session.control_available()
        if faults is not None and not info.has_control:
            raise LoadRunError(
                f"the scenario injects faults but {base_url} has no /_harness/faults control "
                "endpoint (run the emulator with --control, or the fault proxy)"
            )
        if info.has_control:
            session.set_faults(None)
        for model in models:
            if preload:
                answer = session.preload(model, ttl_s)
                if info.runtime is None and isinstance(answer.get("runtime"), dict):
                    info.runtime = answer["runtime"]
                info.models.setdefault(model, {})["model_info"] = answer.get("model_info")
        for key, meta in session.model_metadata().items():
            if key in models:
                info.models.setdefault(key, {}).update(meta)
        if info.has_control:
            info.truth_since = session.truth_last_id()
            if faults is not None:
                session.set_faults(faults)
    return info


def finish_server(base_url: str, info: ServerInfo, *, faults_set: bool,
                  api_token: str | None = None) -> list[dict[str, Any]] | None:
    """After the run: clear the fault plan and fetch the truth of the run's requests."""
    if not info.has_control:
        return None
    with ServerSession(base_url, api_token=api_token) as session:
        if faults_set:
            session.set_faults(None)
        return session.truth(info.truth_since)
