"""Cassettes the way pytest-recording users expect: ``@pytest.mark.vcr``, ``--record-mode``,
``vcr_config``, a missing cassette in replay failing with its path; exercised in a subprocess
pytest on an app-style test file (its app sends a token) against the embedded emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TOKEN = "sk-lm-vcr:K33P-this-out"

APP_TESTS = '''
import os
import httpx
import pytest

def ask(target, content):
    response = httpx.post(target.openai_base_url + "/chat/completions",
                          headers={"Authorization": "Bearer " + os.environ["APP_TOKEN"]},
                          json={"model": target.models[0], "seed": 1,
                                "messages": [{"role": "user", "content": content}]})
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]

@pytest.fixture(scope="module")
def vcr_config():
    return {"filter_headers": ["x-app-trace"]}

@pytest.mark.vcr
def test_answer(target, truth):
    text = ask(target, "hello")
    assert text
    out = os.environ.get("ANSWER_FILE")
    if out:
        open(out, "a").write(text + "\\n")
    served = len(truth.records("/v1/chat/completions"))  # control calls are never recorded
    open(os.environ["SERVED_FILE"], "a").write(f"{served}\\n")

@pytest.mark.vcr(record_mode="none")
def test_pinned_replay_only(target):
    ask(target, "never recorded")
'''


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_app.py").write_text(APP_TESTS)
    env = {**os.environ, "APP_TOKEN": TOKEN, "LMSTUDIO_API_TOKEN": TOKEN,
           "ANSWER_FILE": str(tmp_path / "answers.txt"),
           "SERVED_FILE": str(tmp_path / "served.txt")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "-o", "addopts=",
         "-o", "asyncio_default_fixture_loop_scope=function",
         "--rootdir", str(tmp_path), str(tmp_path / "test_app.py"), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90)


def served(tmp_path: Path) -> list[int]:
    return [int(n) for n in (tmp_path / "served.txt").read_text().split()]


def test_record_modes_replay_and_missing_cassettes(tmp_path: Path) -> None:
    cassettes = tmp_path / "cassettes" / "test_app"
    cassette = cassettes / "test_answer.yaml"
    # none (the default): nothing recorded yet, so each test fails naming its cassette
    missing = run(tmp_path)
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "2 errors" in missing.stdout, missing.stdout
    assert f"no cassette {cassette} to replay" in missing.stdout, missing.stdout
    assert f"no cassette {cassettes / 'test_pinned_replay_only.yaml'}" in missing.stdout
    # once: recorded (the request reached the server); the marker's record_mode=none wins
    once = run(tmp_path, "--record-mode=once")
    assert once.returncode == 1 and "1 passed, 1 error" in once.stdout, once.stdout
    assert cassette.is_file() and served(tmp_path) == [1]
    text = cassette.read_text()
    assert TOKEN not in text and "K33P" not in text and "/_harness/" not in text
    # none: replayed, the server saw nothing, the answer is the recorded one
    replay = run(tmp_path, "-k", "test_answer")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert served(tmp_path) == [1, 0]
    answers = (tmp_path / "answers.txt").read_text().splitlines()
    assert len(answers) == 2 and answers[0] == answers[1]
    # rewrite: deleted and recorded afresh
    cassette.write_text("garbage: [")
    rewrite = run(tmp_path, "--record-mode=rewrite", "-k", "test_answer")
    assert rewrite.returncode == 0, rewrite.stdout + rewrite.stderr
    assert served(tmp_path)[-1] == 1 and "garbage" not in cassette.read_text()
    bad = run(tmp_path, "--record-mode=sometimes")
    assert bad.returncode == 4 and "invalid choice" in bad.stderr
