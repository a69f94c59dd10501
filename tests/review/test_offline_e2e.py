"""End to end against the embedded emulator: real HTTP, real client, every parse layer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.review.models import RunStatus
from harness.review.roster import parse_roster
from harness.review.service import run_review
from harness.studio.testing import running_studio

ROOT = Path(__file__).resolve().parents[2]
SUBJECT = ROOT / "fixtures" / "review" / "sample" / "subject.toml"
ROSTER = ROOT / "fixtures" / "review" / "roster-offline.toml"


def _chat_calls(truth: list[dict[str, object]]) -> int:
    return sum(t["endpoint"] == "/v1/chat/completions" for t in truth)


def test_cli_run_writes_every_format_and_exercises_every_layer(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with running_studio(auto_evict=False) as studio:
        args = [
            "review",
            "--subject",
            str(SUBJECT),
            "--roster",
            str(ROSTER),
            "--out",
            str(out),
            "--base-url",
            studio.base_url,
            "--quiet",
        ]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        calls = _chat_calls(studio.truth())
        again = CliRunner().invoke(app, args)  # the response cache answers: no model call
        assert again.exit_code == 0, again.output
        assert _chat_calls(studio.truth()) == calls == 9  # 6 reviewers + 3 re-asks
    run = json.loads((out / "run.json").read_text())
    layers = {r["name"]: (r["status"], r["parse_layer"]) for r in run["runs"]}
    assert layers == {
        "Magistral": ("ok", "json_schema"),
        "Qwen3-Coder-30B": ("ok", "json_extraction"),
        "Qwen3-Thinking": ("ok", "lenient_repair"),
        "Gemma": ("ok", "markdown_sections"),
        "GPT-OSS": ("ok", "reask"),
        "Qwen3-4B": ("unparsed", "unparsed"),
    }
    unparsed = next(r for r in run["runs"] if r["name"] == "Qwen3-4B")
    assert "can't provide" in unparsed["raw_text"]  # raw text kept
    thinking = next(r for r in run["runs"] if r["name"] == "Qwen3-Thinking")
    assert thinking["reasoning"]  # kept apart from the content
    assert all(r["completion_tokens"] for r in run["runs"])
    assert run["manifest"]["subject_sha256"] and run["manifest"]["seed"] == 7
    report = json.loads((out / "review.json").read_text())
    shared = report["critical_groups"][0]["findings"][0]
    assert shared["support"] == 5 and len(shared["sources"]) == 5  # merged across wordings
    md = (out / "review.md").read_text()
    assert "| Qwen3-4B |" in md and "unparsed" in md
    html = (out / "review.html").read_text()
    assert "<script>alert" not in html  # hostile diff text quoted by models stays inert
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in html
    assert html.count("<script>") == 1  # only the report's own filter script
    rendered = CliRunner().invoke(
        app, ["review", "render", str(out), "--out", str(tmp_path / "again")]
    )
    assert rendered.exit_code == 0, rendered.output
    assert (tmp_path / "again" / "review.md").read_text() == md


def test_unknown_model_fails_preflight_listing_what_is_available(tmp_path: Path) -> None:
    roster = tmp_path / "roster.toml"
    roster.write_text('[[reviewers]]\nname = "X"\nmodel = "nope/missing-7b"\nfocus = "all"\n')
    with running_studio() as studio:
        result = CliRunner().invoke(
            app,
            [
                "review",
                "--subject",
                str(SUBJECT),
                "--roster",
                str(roster),
                "--out",
                str(tmp_path / "o"),
                "--base-url",
                studio.base_url,
                "--quiet",
            ],
        )
        assert _chat_calls(studio.truth()) == 0  # no generation was attempted
    assert result.exit_code == 2
    assert "nope/missing-7b" in result.output and "qwen/qwen3-4b" in result.output


def test_failed_reviewers_become_status_rows_and_quorum_decides(tmp_path: Path) -> None:
    """Concurrent JIT loads with auto-evict cut each other off, as in LM Studio."""
    text = ROSTER.read_text()
    roster = parse_roster(text)
    assert roster.run.concurrency > 1
    with running_studio() as studio:  # auto-evict on
        outcome = run_review(
            subject_path=SUBJECT,
            roster_path=ROSTER,
            out_dir=tmp_path,
            base_url=studio.base_url,
            progress=False,
            use_cache=False,
        )
    failed = [r for r in outcome.record.runs if r.status in (RunStatus.ERROR, RunStatus.TIMEOUT)]
    assert failed, "expected evictions to fail some reviewers"
    for run in failed:
        assert run.error and "POST http://127.0.0.1" in run.error and run.model in run.error
    assert (tmp_path / "review.html").is_file()
    ok = sum(r.review is not None for r in outcome.record.runs)
    assert outcome.report.readiness.quorum_met == (ok >= 3)


@pytest.mark.parametrize("name", ["../escape", "sub/dir"])
def test_output_names_escaping_the_directory_are_refused(tmp_path: Path, name: str) -> None:
    result = CliRunner().invoke(
        app,
        [
            "review",
            "render",
            str(ROOT / "fixtures/review/phase2"),
            "--out",
            str(tmp_path / "o"),
            "--name",
            name,
        ],
    )
    assert result.exit_code == 2
    assert "outside" in result.output or "plain file name" in result.output
