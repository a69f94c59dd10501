"""A pytest plugin object that collects per-test outcomes for the evaluation report.

Why a plugin object and not JUnit XML: the runner calls ``pytest.main`` in-process, so hooks give
the outcome, duration, docstring, markers and ``record_property`` evidence of each test directly,
and drive a rich progress bar while the suites run.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import pytest

from harness.evaluate.gaps import GAPS, gap_of
from harness.evaluate.report import ModelEntry, TargetInfo, TestEvidence

_GAP_TITLES = {g.marker: g.title for g in GAPS}


def _first_paragraph(doc: str | None) -> str:
    if not doc:
        return ""
    text = inspect.cleandoc(doc)
    return " ".join(text.split("\n\n", 1)[0].split())


class EvaluationCollector:
    """Hook implementations; ``tests`` holds one ``TestEvidence`` per collected test."""

    def __init__(self, progress: Any = None) -> None:
        self.progress = progress
        self._task: Any = None
        self.meta: dict[str, tuple[str | None, str, str | None]] = {}
        self.results: dict[str, TestEvidence] = {}
        self.problems: list[str] = []
        self.target: TargetInfo | None = None
        self.target_error: str | None = None
        self.started = time.perf_counter()
        self.duration_s = 0.0

    # -- collection ------------------------------------------------------------------------------
    @pytest.hookimpl
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.problems.append(f"collection of {report.nodeid or 'the suites'} failed: "
                                 f"{_short(report)}")

    @pytest.hookimpl
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            markers = {m.name for m in item.iter_markers()}
            gap = gap_of(markers)
            doc = _first_paragraph(getattr(getattr(item, "obj", None), "__doc__", None))
            self.meta[item.nodeid] = (gap.marker if gap else None, doc, _subject_of(item))
        if self.progress is not None:
            self._task = self.progress.add_task("evaluating", total=len(session.items))

    # -- outcomes --------------------------------------------------------------------------------
    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        gap, doc, subject = self.meta.get(report.nodeid, (None, "", None))
        current = self.results.get(report.nodeid)
        if current is None:
            current = self.results[report.nodeid] = TestEvidence(
                nodeid=report.nodeid, name=report.nodeid.split("::")[-1], gap=gap,
                outcome="passed", doc=doc, subject=subject)
        current.duration_s = round(current.duration_s + report.duration, 4)
        for name, value in report.user_properties:
            if name == "evidence":
                current.evidence = str(value)
        if report.skipped:
            current.outcome = "skipped"
            current.message = _skip_reason(report)
        elif report.failed:
            current.outcome = "failed" if report.when == "call" else "error"
            current.message = _short(report)
        if report.when == "teardown" and self.progress is not None and self._task is not None:
            label = _GAP_TITLES.get(gap or "", "other")
            self.progress.update(self._task, advance=1, description=label)

    @pytest.hookimpl
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.duration_s = time.perf_counter() - self.started
        from harness.pytest_plugin import session_target, session_target_error

        self.target_error = session_target_error(session.config)
        target = session_target(session.config)
        if target is not None:
            info = target.info
            self.target = TargetInfo(
                kind=target.kind, base_url=target.base_url, server=info.get("server"),
                version=info.get("version"),
                models=[ModelEntry(**m) for m in info.get("models", [])],
                used_models=list(target.models), capabilities=sorted(target.capabilities),
                calibration=target.calibration.summary(),
            )

    @property
    def tests(self) -> list[TestEvidence]:
        order = list(self.meta)
        return sorted(self.results.values(),
                      key=lambda t: order.index(t.nodeid) if t.nodeid in self.meta else 1 << 30)


def _subject_of(item: pytest.Item) -> str | None:
    """The subject a test judged: its ``subject`` parameter, ``harness`` for a test of the
    harness's own API, None for a test of no particular client."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    spec = params.get("subject_spec")
    if spec is not None:
        return str(spec.name)
    if item.get_closest_marker("harness_api") is not None:
        return "harness"
    return None


def _short(report: Any) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message).splitlines()[0][:400]
    text = str(report.longrepr or "").strip().splitlines()
    return (text[-1] if text else "failed")[:400]


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
        return reason.removeprefix("Skipped: ")
    return str(longrepr or "skipped")
