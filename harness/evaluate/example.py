"""The committed example reports: how they are made and checked.

``reports/examples/evaluation.*`` is the default run (subject ``harness``);
``reports/examples/comparison.*`` judges ``harness`` and the ``openai`` SDK side by side (the
gap x subject matrix). ``regenerate`` runs the full suites against the embedded emulator and
writes the *normalised* reports (no timestamps, ports or measured timings), so the examples change
only when the suites, the gaps or the templates do. ``python -m harness.evaluate.example``
regenerates both.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.evaluate.report import EvaluationReport, normalised, write_evaluation
from harness.evaluate.runner import EvaluationOptions, locate_suites, run_suites

EXAMPLE_NAME = "evaluation"
COMPARISON_NAME = "comparison"
COMPARED = ("harness", "openai")


def example_dir() -> Path:
    return locate_suites().parent / "reports" / "examples"


def regenerate(out_dir: Path | None = None) -> EvaluationReport:
    """Both examples; returns the default one."""
    directory = out_dir or example_dir()
    report, _ = run_suites(EvaluationOptions())
    example = normalised(report)
    write_evaluation(example, directory)
    compared, _ = run_suites(EvaluationOptions(subjects=COMPARED))
    write_evaluation(normalised(compared), directory, name=COMPARISON_NAME)
    return example


def load_example(directory: Path | None = None, name: str = EXAMPLE_NAME) -> EvaluationReport:
    path = (directory or example_dir()) / f"{name}.json"
    return EvaluationReport.model_validate_json(path.read_text(encoding="utf-8"))


if __name__ == "__main__":
    result = regenerate(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
    print(f"{result.verdict}: {result.totals.passed} passed, {result.totals.failed} failed")
