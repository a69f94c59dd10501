"""Ground truth fetched in pages from a real emulator process: the same records as one body."""

from __future__ import annotations

import httpx
import pytest

from harness.control import ControlClient


@pytest.mark.timeout(60)
def test_truth_pages_return_every_record_once_in_order(emulator_url: str) -> None:
    with httpx.Client(base_url=emulator_url, timeout=10) as http:
        start = ControlClient(emulator_url).truth()
        since = max((r["id"] for r in start), default=0)
        for i in range(7):
            http.post("/v1/chat/completions", json={
                "model": "qwen/qwen3-4b", "max_tokens": 2, "stream": False,
                "messages": [{"role": "user", "content": f"hi {i}"}]}).raise_for_status()
        bad = http.get("/_harness/truth", params={"since": since, "limit": 0})
        assert bad.status_code == 400 and "limit" in bad.json()["error"]
        first = http.get("/_harness/truth", params={"since": since, "limit": 3}).json()
        assert len(first["records"]) == 3 and first["more"] is True
    control = ControlClient(emulator_url)
    try:
        whole = control.truth(since)
        paged = control.truth(since, page=3)
        last = control.truth_last_id()
    finally:
        control.close()
    assert len(whole) >= 7
    assert [r["id"] for r in paged] == [r["id"] for r in whole]
    assert last == whole[-1]["id"]
