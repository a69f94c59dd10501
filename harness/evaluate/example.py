"""The committed example report (``reports/examples/evaluation.*``): how it is made and checked.

``regenerate`` runs the full suites against the embedded emulator and writes the *normalised*
report (no timestamps, ports or measured timings), so the example changes only when the suites,
the gaps or the templates do. ``python -m harness.evaluate.example`` regenerates it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.evaluate.report import EvaluationReport, normalised, write_evaluation
from harness.evaluate.runner import EvaluationOptions, locate_suites, run_suites

EXAMPLE_NAME = "evaluation"


def example_dir() -> Path:
    return locate_suites().parent / "reports" / "examples"


def regenerate(out_dir: Path | None = None) -> EvaluationReport:
    report, _ = run_suites(EvaluationOptions())
    example = normalised(report)
    write_evaluation(example, out_dir or example_dir())
    return example


def load_example(directory: Path | None = None) -> EvaluationReport:
    path = (directory or example_dir()) / f"{EXAMPLE_NAME}.json"
    return EvaluationReport.model_validate_json(path.read_text(encoding="utf-8"))


if __name__ == "__main__":
    result = regenerate(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
    print(f"{result.verdict}: {result.totals.passed} passed, {result.totals.failed} failed")
