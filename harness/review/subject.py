"""The subject of a review: change description, diff, files and test results, fenced as data.

Why fenced with a nonce: a diff is untrusted text. Wrapping it between marker lines that carry a
hash of the content (so the content cannot contain its own end marker) lets the prompt tell
reviewers that everything inside is data, and lets the report flag instruction-like lines.

Why fitting per reviewer: models differ in context length (``/api/v1/models``), so each reviewer
gets as much of the subject as fits, cut at line boundaries, in priority order (description, test
results, diff, files); what was cut is recorded per reviewer and shown in the report. Token counts
are an estimate (4 characters per token): the harness cannot know every model's tokenizer, so the
budget keeps a reserve.
"""

from __future__ import annotations

import hashlib
import math
import re
import subprocess
from pathlib import Path

from pydantic import BaseModel, Field

from harness.review.errors import ReviewInputError
from harness.review.models import Truncation
from harness.review.roster import load_toml_model

CHARS_PER_TOKEN = 4
_INJECTION = re.compile(
    r"(?i)(ignore (all |any )?(previous|prior|above) instructions|disregard (the )?(system|above)|"
    r"you are now|new instructions:|^\s*system\s*:|rate (this|it) 10)"
)


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


class SubjectFile(BaseModel):
    path: str
    content: str


class Subject(BaseModel):
    title: str = Field(min_length=1)
    description: str = ""
    diff: str = ""
    files: list[SubjectFile] = Field(default_factory=list)
    test_results: str = ""

    def is_empty(self) -> bool:
        return not (
            self.description.strip() or self.diff.strip() or self.files or self.test_results.strip()
        )

    def sha256(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    def suspicious_lines(self) -> list[str]:
        """Lines that read like instructions to the reviewer (prompt injection candidates)."""
        texts = [self.description, self.diff, self.test_results, *(f.content for f in self.files)]
        found = []
        for text in texts:
            for line in text.splitlines():
                if _INJECTION.search(line):
                    found.append(line.strip()[:200])
        return found


class _SubjectFile(BaseModel):
    model_config = {"extra": "forbid"}

    title: str = Field(min_length=1)
    description: str = ""
    description_file: str | None = None
    diff_file: str | None = None
    git_range: str | None = None
    git_repo: str = "."
    files: list[str] = Field(default_factory=list)
    test_results: str = ""
    test_results_file: str | None = None


def _read(base: Path, name: str, what: str, source: Path) -> str:
    path = (base / name).resolve()
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ReviewInputError(f"{source}: cannot read {what} {path}: {exc}") from exc


def git_diff(repo: Path, revision_range: str) -> str:
    """``git diff <range>`` in ``repo`` (arguments passed as a list: no shell)."""
    if revision_range.startswith("-"):
        raise ReviewInputError(f"git range {revision_range!r} must not start with '-'")
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), "diff", "--no-color", revision_range, "--"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ReviewInputError(f"git diff {revision_range} in {repo} failed: {exc}") from exc
    if done.returncode != 0:
        raise ReviewInputError(
            f"git diff {revision_range} in {repo} failed ({done.returncode}): {done.stderr.strip()}"
        )
    return done.stdout


def load_subject(path: Path) -> Subject:
    """A subject from TOML (fields above), a ``.diff``/``.patch``, or a text/Markdown file."""
    if not path.is_file():
        raise ReviewInputError(f"subject file {path} does not exist")
    base = path.parent
    if path.suffix in {".diff", ".patch"}:
        subject = Subject(title=path.stem, diff=_read(base, path.name, "diff", path))
    elif path.suffix == ".toml":
        raw = load_toml_model(path.read_text(encoding="utf-8"), _SubjectFile, str(path))
        description = raw.description
        if raw.description_file:
            description += _read(base, raw.description_file, "description", path)
        diff = _read(base, raw.diff_file, "diff", path) if raw.diff_file else ""
        if raw.git_range:
            diff += git_diff((base / raw.git_repo).resolve(), raw.git_range)
        tests = raw.test_results
        if raw.test_results_file:
            tests += _read(base, raw.test_results_file, "test results", path)
        files = [
            SubjectFile(path=name, content=_read(base, name, "file", path)) for name in raw.files
        ]
        subject = Subject(
            title=raw.title, description=description, diff=diff, files=files, test_results=tests
        )
    else:
        subject = Subject(title=path.stem, description=_read(base, path.name, "subject", path))
    if subject.is_empty():
        raise ReviewInputError(
            f"{path}: the subject is empty (no description, diff, files or "
            "test results): there is nothing to review"
        )
    return subject


def _cut(text: str, budget_tokens: int) -> str:
    """The longest prefix of whole lines within the budget."""
    limit = budget_tokens * CHARS_PER_TOKEN
    if len(text) <= limit:
        return text
    kept = text[:limit]
    newline = kept.rfind("\n")
    return kept[: newline + 1] if newline > 0 else kept


def fence(body: str) -> str:
    nonce = hashlib.sha256(body.encode()).hexdigest()[:12]
    while f"END SUBJECT {nonce}" in body:
        nonce = hashlib.sha256((nonce + body).encode()).hexdigest()[:12]
    return f"===== BEGIN SUBJECT {nonce} =====\n{body.rstrip()}\n===== END SUBJECT {nonce} ====="


def fit_subject(subject: Subject, budget_tokens: int) -> tuple[str, list[Truncation]]:
    """The fenced subject within ``budget_tokens`` and what had to be cut to get there."""
    sections: list[tuple[str, str, str]] = [
        ("description", "## Description\n", subject.description),
        ("test results", "## Test results\n", subject.test_results),
        ("diff", "## Diff\n", subject.diff),
        *((f"file {f.path}", f"## File: {f.path}\n", f.content) for f in subject.files),
    ]
    remaining = max(0, budget_tokens)
    parts = [f"# {subject.title}\n"]
    remaining -= estimate_tokens(parts[0])
    truncations: list[Truncation] = []
    for name, header, text in sections:
        if not text.strip():
            continue
        need = estimate_tokens(text)
        room = remaining - estimate_tokens(header) - 20
        if need <= room:
            parts.append(header + text.rstrip() + "\n")
            remaining -= need + estimate_tokens(header)
            continue
        kept = _cut(text, max(0, room)) if room > 0 else ""
        kept_tokens = estimate_tokens(kept)
        cut_tokens = need - kept_tokens
        truncations.append(
            Truncation(
                section=name,
                original_tokens=need,
                kept_tokens=kept_tokens,
                note="omitted entirely" if not kept else "cut at a line boundary",
            )
        )
        if kept:
            parts.append(
                header + kept.rstrip() + f"\n[... {cut_tokens} tokens cut by the "
                "harness to fit this reviewer's context ...]\n"
            )
            remaining -= kept_tokens + estimate_tokens(header) + 20
        else:
            parts.append(header + f"[... omitted: {need} tokens did not fit ...]\n")
    return fence("\n".join(parts)), truncations
