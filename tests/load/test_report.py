"""The load report rendered from hand-made records: the charts people read (latency against
throughput, TTFT and ITL CDFs per level) are there, scale with the page, and name what failed."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

from harness.load.charts import CDF_POINTS, cdf_points, line_chart
from harness.load.finalize import RunFacts, finalize
from harness.load.metrics import RequestRecord
from harness.load.scenario import parse_scenario


def _rec(level: int, t: float, ttft: float, gap: float, n: int = 9) -> RequestRecord:
    return RequestRecord(endpoint="chat", model="m", stream=True, t_intended=t, t_send=t,
                         t_first_token=t + ttft, t_last_token=t + ttft + gap * (n - 1),
                         t_done=t + ttft + gap * (n - 1), gaps=[gap] * (n - 1), chunks=n,
                         n_server=n, status=200, level=level)


def _write_records(out: Path, rows: list[RequestRecord]) -> None:
    (out / "requests.jsonl").write_text("".join(json.dumps(r.to_json()) + "\n" for r in rows))


def test_report_has_sweep_and_cdf_charts_scaled_to_the_page(tmp_path: Path) -> None:
    scenario = parse_scenario({"name": "sweep<&>", "load": {"levels": [1, 4, 16],
                                                            "level_duration_s": 10,
                                                            "warmup_s": 0},
                               "slo": {"ttft_p95_ms": 80}})
    t0 = 1000.0
    rows = [_rec(level, t0 + level * 10 + i * 0.1, ttft=0.03 * (level + 1), gap=0.05)
            for level in range(3) for i in range(40)]
    _write_records(tmp_path, rows)
    report = finalize(tmp_path, scenario, RunFacts(t0=t0, base_url="http://127.0.0.1:1",
                                                   workers=1, cpu_max=10, cpu_warning=False))
    assert report.verdict == "fail"  # level 16's TTFT (90 ms) misses the 80 ms SLO
    html = (tmp_path / "report.html").read_text()
    for title in ("Latency against throughput", "TTFT distribution per level (CDF)",
                  "ITL distribution per level (CDF", "Throughput over time",
                  "TTFT p95 over time"):
        assert title in html, title
    assert "output tokens/s" in html  # the sweep's x axis is throughput, not users
    assert html.count("<svg") == 5
    assert not re.search(r"<svg[^>]* width=", html)  # scales with the page (viewBox + CSS)
    assert "sweep&lt;&amp;&gt;" in html and "sweep<&>" not in html
    assert ">1 users<" in html and ">16 users<" in html  # CDF legends and sweep labels
    assert not re.search(r'(src|href)="https?:', html)  # nothing fetched
    assert "<details>" in html  # the long percentile table is folded


def test_cdf_points_are_thinned_but_keep_the_tail() -> None:
    values = [float(v) for v in range(1000)]
    points = cdf_points(values)
    assert len(points) <= CDF_POINTS + 1
    assert points[0] == (0.0, 0.001) and points[-1] == (999.0, 1.0)
    assert all(a[0] <= b[0] and a[1] < b[1] for a, b in itertools.pairwise(points))
    assert cdf_points([]) == []


def test_a_chart_without_data_says_so() -> None:
    assert "no data" in line_chart("t", "x", "y", [("a", [(1.0, None)])])


def test_report_states_chunk_counted_tokens_and_the_engine_s_own_timings(tmp_path: Path) -> None:
    """A server without streamed usage: valid, and the report says how N was counted. With
    llama.cpp's timings on each record, the cross-check sets them beside the client's."""
    scenario = parse_scenario({"name": "engine", "load": {"levels": [1], "warmup_s": 0}})
    rows = [_rec(0, 1000.0 + i, ttft=0.05, gap=0.02) for i in range(5)]
    for r in rows:
        r.n_server = None  # llama-cpp-python: no usage in streams
    _write_records(tmp_path, rows)
    facts = RunFacts(t0=1000.0, base_url="http://127.0.0.1:1", workers=1, cpu_max=10,
                     cpu_warning=False)
    report = finalize(tmp_path, scenario, facts)
    assert report.valid and report.exit_code == 0, report.reasons
    chunked = "tokens counted from stream chunks, server sent no usage"
    assert report.token_counts == chunked and report.server_crosscheck is None
    for name in ("report.md", "report.html"):
        assert chunked in (tmp_path / name).read_text(), name
    for r in rows:  # llama-server: usage, and its own prompt_ms / per-token decode time
        r.n_server, r.server_ttft_s, r.server_itl_s = 9, 0.04, 0.016
    _write_records(tmp_path, rows)
    check = finalize(tmp_path, scenario, facts).server_crosscheck
    assert check is not None and check.source == "llama.cpp timings" and check.requests == 5
    assert check.ttft_minus_server_ms and abs((check.ttft_minus_server_ms.p50 or 0) - 10) < 1e-6
    assert check.itl_over_server and abs((check.itl_over_server.p50 or 0) - 1.25) < 1e-6
    assert "Server-side cross-check (llama.cpp timings)" in (tmp_path / "report.md").read_text()
