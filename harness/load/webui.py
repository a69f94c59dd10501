"""The harness inside Locust's web UI: an "LLM metrics" tab, a "Scenario & verdict" tab, a live
page with the report's charts, and the LLM metrics as a CSV download.

Built on Locust's documented extension points (``template_args`` ``extended_tabs`` /
``extended_tables`` / ``extended_csv_files`` and an ``extended_stats`` entry added to the
``/stats/requests`` poll), so Locust's own tabs, charts and CSVs stay as they are and only gain the
numbers they cannot hold. Routes go through Locust's auth decorator (``--web-login``).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from harness.load.analysis import LLM_COLUMNS, llm_csv

LLM_TAB, SCENARIO_TAB = "harness-llm", "harness-scenario"

_LLM_TITLES = {
    "level": "level", "target": "target", "unit": "unit", "name": "name",
    "requests": "requests", "errors": "errors", "rps": "req/s", "output_tps": "output tok/s",
    "ttft_p50_ms": "TTFT p50 ms", "ttft_p95_ms": "TTFT p95 ms", "ttft_p99_ms": "TTFT p99 ms",
    "itl_p50_ms": "ITL p50 ms", "itl_p95_ms": "ITL p95 ms", "itl_p99_ms": "ITL p99 ms",
    "tpot_p50_ms": "TPOT p50 ms", "tpot_p95_ms": "TPOT p95 ms", "tpot_p99_ms": "TPOT p99 ms",
    "request_tps_mean": "tok/s per request (mean)", "request_tps_p50": "tok/s per request p50",
    "request_tps_p5": "tok/s per request p5", "slo_passed": "SLOs met",
}


def _display(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, float):
            out[key] = f"{value:.2f}"
        elif value is None:
            out[key] = "-"
        else:
            out[key] = str(value) if isinstance(value, bool) else value
    return out


def install(environment: Any, *, llm_rows: Callable[[], list[dict[str, Any]]],
            scenario_rows: Callable[[], list[dict[str, str]]],
            live_page: Callable[[], str]) -> None:
    """Register the tabs and routes on ``environment.web_ui`` (a no-op without a web UI). The
    LLM tab and the CSV download both show ``llm_rows()``: one aggregation, two formats."""
    web_ui = environment.web_ui
    if web_ui is None:
        return
    from flask import Response, request

    web_ui.template_args["extended_tabs"] = [
        {"title": "LLM metrics", "key": LLM_TAB},
        {"title": "Scenario & verdict", "key": SCENARIO_TAB},
    ]
    web_ui.template_args["extended_tables"] = [
        {"key": LLM_TAB, "structure": [{"key": k, "title": _LLM_TITLES[k]} for k in LLM_COLUMNS]},
        {"key": SCENARIO_TAB, "structure": [{"key": "field", "title": "field"},
                                            {"key": "value", "title": "value"}]},
    ]
    web_ui.template_args["extended_csv_files"] = [
        {"href": "./harness/llm.csv", "title": "Download LLM metrics CSV (TTFT, ITL, TPOT, "
                                                "tokens/s per request)"},
        {"href": "./harness/live", "title": "Live LLM report with charts"},
    ]
    app = web_ui.app
    auth = web_ui.auth_required_if_enabled

    @app.after_request
    def _extend_stats(response: Any) -> Any:
        if request.path != "/stats/requests" or not response.is_json:
            return response
        data = response.get_json()
        data["extended_stats"] = [
            {"key": LLM_TAB, "data": [_display(r) for r in llm_rows()]},
            {"key": SCENARIO_TAB, "data": scenario_rows()},
        ]
        import json

        response.set_data(json.dumps(data))
        return response

    @auth
    def _llm_csv() -> Any:
        buffer = io.StringIO()
        llm_csv(buffer, llm_rows())
        return Response(buffer.getvalue(), mimetype="text/csv", headers={
            "Content-Disposition": "attachment; filename=llm_metrics.csv"})

    @auth
    def _live() -> Any:
        return Response(live_page(), mimetype="text/html")

    app.add_url_rule("/harness/llm.csv", "harness_llm_csv", _llm_csv)
    app.add_url_rule("/harness/live", "harness_live", _live)
