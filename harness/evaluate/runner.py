"""``harness evaluate``: run the suites in-process against a target and write the report.

Where the suites live: in the repository's ``suites/`` directory, which is where pytest and CI
collect them; a wheel carries the same files as ``harness.suites`` (and ``fixtures/`` as
``harness.fixtures``, see setup.py and ``harness.evaluate.bundled``), so one copy of the proof
serves both. ``--suites DIR`` runs any other directory of tests (the user's own) with the plugin.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.evaluate.collector import EvaluationCollector
from harness.evaluate.report import EvaluationReport, build_report, write_evaluation
from harness.secrets import TOKEN_ENV

SUITE_FILES = ("test_streaming.py", "test_model_switching.py", "test_errors.py",
               "test_call_layer.py", "test_agent.py", "test_cache_expiry.py", "test_backoff.py",
               "test_concurrency.py")
DEFAULT_OUT = Path("reports") / "out"


class EvaluationError(RuntimeError):
    """The evaluation could not run (suites not found, pytest usage error)."""


@dataclass(frozen=True)
class EvaluationOptions:
    base_url: str | None = None
    api_token: str | None = None
    models: tuple[str, ...] = ()
    via_proxy: bool = False
    replay: bool = False
    suites: Path | None = None
    out: Path | None = None
    select: str | None = None  # a pytest -k expression
    subjects: tuple[str, ...] = ()  # default: the plugin's (harness)
    extra_args: tuple[str, ...] = ()


def locate_suites(explicit: Path | None = None) -> Path:
    """The suites directory: explicit (any directory of tests), else the bundled suites."""
    from harness.evaluate.bundled import suites_dir

    if explicit is not None:
        if explicit.is_dir() and any(explicit.rglob("test_*.py")):
            return explicit.resolve()
        raise EvaluationError(f"evaluation suites not found: {explicit} holds no test_*.py; "
                              "pass --suites DIR with your tests")
    found = suites_dir()
    if found is not None and (found / "test_streaming.py").is_file():
        return found
    raise EvaluationError("evaluation suites not found in this installation (neither "
                          "harness.suites nor a checkout's suites/); pass --suites DIR")


def pytest_args(options: EvaluationOptions, suites: Path) -> list[str]:
    root = suites.parent
    files = [str(suites / name) for name in SUITE_FILES if (suites / name).is_file()]
    if not files:  # the user's own suites: everything pytest collects there
        files = [str(suites)]
    # pytest's own terminal output is replaced by the progress bar and the report; addopts from
    # the ini file are dropped because they may name terminal-only options (``-ra``).
    args = [*files, "--rootdir", str(root), "-p", "no:cacheprovider", "-p", "no:terminal",
            "-o", "addopts=", "--import-mode=importlib",
            "-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function",
            "-W", "ignore::pytest.PytestUnknownMarkWarning"]
    ini = root / "pyproject.toml"
    if ini.is_file():
        args += ["-c", str(ini)]
    if options.base_url:
        args += ["--lmstudio-url", options.base_url]
    if options.models:
        args += ["--lmstudio-models", ",".join(options.models)]
    if options.via_proxy:
        args.append("--lmstudio-via-proxy")
    if options.replay:
        args.append("--lmstudio-replay")
    for name in options.subjects:
        args += ["--lmstudio-subject", name]
    if options.select:
        args += ["-k", options.select]
    return [*args, *options.extra_args]


def check_subjects(names: tuple[str, ...]) -> None:
    """Unknown names and failing imports stop the run before it starts, in one line."""
    from harness.subjects import SubjectError, resolve

    if len(set(names)) != len(names):
        raise EvaluationError(f"a subject is named twice: {', '.join(names)}")
    for name in names:
        try:
            resolve(name, (str(Path.cwd()),))
        except SubjectError as exc:
            raise EvaluationError(str(exc)) from None


def run_suites(options: EvaluationOptions, progress: Any = None
               ) -> tuple[EvaluationReport, int]:
    """Run the suites in this process; returns the report and pytest's exit code."""
    suites = locate_suites(options.suites)
    check_subjects(options.subjects)
    collector = EvaluationCollector(progress)
    saved = os.environ.get(TOKEN_ENV)
    if options.api_token:  # passed by environment so it never shows in an argv listing
        os.environ[TOKEN_ENV] = options.api_token
    try:
        code = pytest.main(pytest_args(options, suites), plugins=[collector])
    finally:
        if options.api_token:
            if saved is None:
                os.environ.pop(TOKEN_ENV, None)
            else:
                os.environ[TOKEN_ENV] = saved
    problems = list(collector.problems)
    if collector.target_error is None:  # else the target error says it all
        if int(code) not in (0, 1, 5):
            problems.append(f"pytest exited with {int(code)} "
                            f"({pytest.ExitCode(int(code)).name})")
        if not collector.results:
            problems.append("no suite test ran")
    report = build_report(collector.tests, collector.target, duration_s=collector.duration_s,
                          problems=problems, target_error=collector.target_error,
                          subjects=list(options.subjects))
    return report, int(code)


def evaluate(options: EvaluationOptions, console: Any = None) -> tuple[EvaluationReport,
                                                                        dict[str, Path]]:
    """Run with a rich progress bar and write the report (default ``reports/out/``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]{task.description:<45}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=False) as progress:
        report, _ = run_suites(options, progress)
    paths = write_evaluation(report, options.out or DEFAULT_OUT)
    return report, paths
