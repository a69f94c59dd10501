"""`harness review render` over the Phase 2 reviews reproduces the reference analysis.

The committed example in reports/examples/ is the golden file; regenerate it with
`harness review render fixtures/review/phase2 --out reports/examples --name review-phase2`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from harness.cli import app

ROOT = Path(__file__).resolve().parents[2]
PANEL = ROOT / "fixtures" / "review" / "phase2"
GOLDEN = ROOT / "reports" / "examples"


def _normalise(text: str) -> str:
    """Volatile fields: the harness version (the panel's date is fixed by the fixture)."""
    return re.sub(r'("harness_version": "|harness )[0-9][^" ·\n]*', r"\1X", text)


def _render(tmp_path: Path) -> Path:
    result = CliRunner().invoke(
        app, ["review", "render", str(PANEL), "--out", str(tmp_path), "--name", "review-phase2"]
    )
    assert result.exit_code == 0, result.output
    assert '"minimal_path_hours": 44.0' in result.output
    return tmp_path


def test_render_matches_the_golden_files(tmp_path: Path) -> None:
    out = _render(tmp_path)
    for suffix in ("md", "json", "html"):
        produced = (out / f"review-phase2.{suffix}").read_text(encoding="utf-8")
        golden = (GOLDEN / f"review-phase2.{suffix}").read_text(encoding="utf-8")
        assert _normalise(produced) == _normalise(golden), f"review-phase2.{suffix} drifted"


def test_numbers_and_tiers_match_the_reference(tmp_path: Path) -> None:
    report = json.loads((_render(tmp_path) / "review-phase2.json").read_text())
    assert [r["rating"] for r in report["reviewers"]] == [8, 9, 7]
    assert report["ratings"]["mean"] == 8.0
    critical = {
        f["title"]: f["reported_by"] for g in report["critical_groups"] for f in g["findings"]
    }
    assert critical == {
        "No Streaming Model Handling": ["Qwen3-Thinking"],
        "Mid-Request Model Switching Not Handled": ["Qwen3-Thinking"],
        "Error Messages Need More Context": ["Qwen3-Coder-30B"],
        "Exception Handling in Multi-MCP Loop": ["Qwen3-Coder-30B"],
    }
    major = {f["title"]: sorted(f["reported_by"]) for f in report["major"]}
    assert major == {
        "Model Cache Expiration Not Implemented": ["Qwen3-Coder-30B", "Qwen3-Thinking"],
        "Inadequate Rate Limit Handling": ["Qwen3-Thinking"],
        "No Async/Await Safety": ["Qwen3-Coder-30B", "Qwen3-Thinking"],
        "Exception Hierarchy Alignment": ["Magistral"],
        "Docstring Inconsistency": ["Qwen3-Coder-30B"],
    }
    assert len(report["minor"]) == 7
    assert {f["title"]: f["support"] for f in report["minor"]}["Logging Enhancements"] == 2
    assert [s["support"] for s in report["strengths"]] == [3, 3, 3, 3, 3]
    assert report["minimal_path"]["hours"] == 44.0
    assert report["recommended_path"]["hours"] == 70.0
    assert report["readiness"]["verdict"] == "not_ready"
    md = (tmp_path / "review-phase2.md").read_text()
    order = [
        "## Overall Ratings Summary",
        "### Reviewer Status",
        "## Critical Issues",
        "## Major Issues",
        "## Minor Issues",
        "## Strengths",
        "## Recommendations Summary",
        "## Production Readiness Assessment",
        "### Timeline to Production-Ready",
        "## Reviewer Consensus",
        "### Key Quote from",
        "## Next Steps",
        "## Conclusion",
    ]
    positions = [md.index(heading) for heading in order]
    assert positions == sorted(positions)
    assert "**Reported by**: Qwen3-Coder-30B, Qwen3-Thinking" in md
    assert "**Total: ~44h" in md and "**Total: ~70h" in md
