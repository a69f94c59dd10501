"""The ``/_harness/`` control endpoints of the emulator and the fault proxy, over HTTP.

One client for everything that reads ground truth or sets a fault plan from outside the server's
process: the evaluation targets and the load runner. On a real LM Studio these paths answer 200
``{"error": "Unexpected endpoint or method..."}``; ``available()`` reads that as "no control",
and every other call raises ``ControlError`` naming the URL rather than returning it as data.
"""

from __future__ import annotations

from typing import Any

import httpx

from harness.client.errors import redact
from harness.faults import FaultPlan


class ControlError(RuntimeError):
    """A control call failed; names the method and URL (tokens redacted)."""


class ControlClient:
    def __init__(self, control_url: str, *, api_token: str | None = None,
                 timeout: float = 10.0) -> None:
        self.url = control_url.rstrip("/")
        self._secrets = (api_token,) if api_token else ()
        headers = {"authorization": f"Bearer {api_token}"} if api_token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        where = f"{method} {self.url}{path}"
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ControlError(redact(f"{where} failed: {exc}", self._secrets)) from exc
        if response.status_code >= 400:
            raise ControlError(redact(f"{where} answered HTTP {response.status_code}: "
                                      f"{response.text[:300]}", self._secrets))
        try:
            return response.json()
        except ValueError:
            raise ControlError(f"{where}: answer is not JSON: {response.text[:200]!r}") from None

    def available(self) -> bool:
        """Whether this server has control endpoints at all (no error if it has not)."""
        try:
            state = self._call("GET", "/_harness/state")
        except ControlError:
            return False
        return isinstance(state, dict) and "error" not in state

    def set_faults(self, plan: FaultPlan | dict[str, Any]) -> None:
        content = plan.model_dump_json() if isinstance(plan, FaultPlan) else plan
        if isinstance(content, str):
            self._call("PUT", "/_harness/faults", content=content,
                       headers={"content-type": "application/json"})
        else:
            self._call("PUT", "/_harness/faults", json=content)

    def clear_faults(self) -> None:
        self._call("DELETE", "/_harness/faults")

    def fault_stats(self) -> list[dict[str, Any]]:
        stats: list[dict[str, Any]] = self._call("GET", "/_harness/faults")["stats"]
        return stats

    def truth(self, since: int = 0, *, page: int | None = None) -> list[dict[str, Any]]:
        """Truth records with ids above ``since``; with ``page``, fetched ``page`` at a time
        (one body per page instead of one body of the whole run)."""
        records: list[dict[str, Any]] = []
        while True:
            params = {"since": since} if page is None else {"since": since, "limit": page}
            answer = self._call("GET", "/_harness/truth", params=params)
            got = answer.get("records") if isinstance(answer, dict) else None
            if not isinstance(got, list):
                raise ControlError(f"GET {self.url}/_harness/truth: no 'records' list in the "
                                   "answer")
            records.extend(got)
            if page is None or not got or not answer.get("more"):
                return records
            since = max(int(r.get("id", 0)) for r in got)

    def truth_last_id(self) -> int:
        """The newest truth id, without transferring the log (a reused emulator holds 10s of MB
        of it): a run's own requests are the ones after it."""
        answer = self._call("GET", "/_harness/truth", params={"since": 0, "limit": 1})
        last = answer.get("last_id") if isinstance(answer, dict) else None
        if not isinstance(last, int):
            raise ControlError(f"GET {self.url}/_harness/truth: no 'last_id' in the answer")
        return last

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self._call("GET", "/_harness/state")
        return state

    def reset(self) -> None:
        self._call("POST", "/_harness/reset")

    def close(self) -> None:
        self._http.close()
