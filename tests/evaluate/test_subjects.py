"""Subjects: the built-ins against the emulator, names that resolve and names that do not, and
what the plugin does with bad input (one line, or a skip with the reason; never a traceback)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.studio.testing import running_studio
from harness.subjects import (
    Answer,
    SubjectConfig,
    SubjectError,
    acollect,
    check_subject,
    collect,
    resolve,
)

MODEL = "qwen/qwen3-4b"
HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("name", ["harness", "openai"])
def test_builtin_subjects_answer_stream_and_list(name: str) -> None:
    with running_studio() as studio:
        subject = resolve(name).build(SubjectConfig(studio.base_url, model=MODEL))
        whole = subject.chat(HI, model=MODEL, seed=2)
        pieces, streamed = collect(subject.stream_chat(HI, model=MODEL, seed=2))
        assert "".join(pieces) == streamed.text == whole.text and len(pieces) > 3
        assert streamed.model == whole.model == MODEL
        assert streamed.finish_reason == whole.finish_reason == "stop"
        assert streamed.completion_tokens == whole.completion_tokens
        assert MODEL in subject.list_models()

        async def run() -> None:
            answer = await subject.achat(HI, model=MODEL, seed=2)
            apieces, astreamed = await acollect(subject.astream_chat(HI, model=MODEL, seed=2))
            assert answer.text == astreamed.text == whole.text and apieces == pieces
            assert MODEL in await subject.alist_models()
            await subject.aclose()

        asyncio.run(run())
        subject.close()


def test_litellm_subject_answers_and_streams() -> None:
    """The optional ``litellm`` subject (extra ``litellm``, tox env ``litellm``)."""
    pytest.importorskip("litellm", reason="litellm not installed: pip install "
                                          "'lmstudio-harness[litellm]' or tox -e litellm")
    with running_studio() as studio:
        subject = resolve("litellm").build(SubjectConfig(studio.base_url, model=MODEL))
        whole = subject.chat(HI, model=MODEL, seed=2)
        pieces, streamed = collect(subject.stream_chat(HI, model=MODEL, seed=2))
        assert whole.text and "".join(pieces) == streamed.text == whole.text
        assert streamed.finish_reason == whole.finish_reason == "stop"

        async def run() -> None:
            answer = await subject.achat(HI, model=MODEL, seed=2)
            _, astreamed = await acollect(subject.astream_chat(HI, model=MODEL, seed=2))
            assert answer.text == astreamed.text == whole.text

        asyncio.run(run())
        subject.close()


def test_litellm_missing_is_a_one_line_hint() -> None:
    import importlib.util

    if importlib.util.find_spec("litellm") is not None:
        pytest.skip("litellm is installed here")
    with pytest.raises(SubjectError, match=r"cannot import .*lmstudio-harness\[litellm\]"):
        resolve("litellm")


def test_answer_of_plain_values() -> None:
    assert Answer.of("Error: boom") == Answer("Error: boom")
    assert Answer.of(None) == Answer("")
    completion = {"model": "m", "choices": [{"message": {"content": "x"},
                                              "finish_reason": "stop"}],
                  "usage": {"completion_tokens": 1}}
    assert Answer.of(completion) == Answer("x", "m", "stop", 1)
    assert Answer.of({"error": "nope"}).text == '{"error": "nope"}'


def test_stream_without_final_answer_is_a_subject_error() -> None:
    with pytest.raises(SubjectError, match="without its final Answer"):
        collect(iter(["a", "b"]), "mine")


@pytest.mark.parametrize("spec,message", [
    ("nosuch", "unknown subject 'nosuch'; known: "),
    ("", "empty subject name"),
    ("no_such_module_xyz:make", "cannot import no_such_module_xyz"),
    ("harness.subjects:nothing_here", "has no 'nothing_here'"),
    ("harness.subjects:CAPABILITIES", "is a tuple, not a factory"),
    ("nocolon:", "expected module:factory"),
])
def test_bad_names_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(SubjectError) as caught:
        resolve(spec)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_non_subjects_are_refused_naming_what_they_lack() -> None:
    with pytest.raises(SubjectError, match=r"built int, which is not a subject \(missing name"):
        check_subject(3, "m:f")

    class Half:
        name = "half"
        capabilities = frozenset({"sync", "async"})
        chat = stream_chat = list_models = close = staticmethod(lambda: None)

    with pytest.raises(SubjectError, match="missing achat, astream_chat"):
        check_subject(Half(), "m:half")
    Half.capabilities = frozenset({"telepathy"})
    with pytest.raises(SubjectError, match="unknown capabilities telepathy"):
        check_subject(Half(), "m:half")


USER_MODULE = '''
from harness.subjects import Answer, Subject

class SyncOnly(Subject):
    name = "sync-only"
    capabilities = frozenset({"sync"})
    def __init__(self, config):
        self.config = config
    def chat(self, messages, *, model, **params):
        return Answer("hello", model, "stop")

def make(config):
    return SyncOnly(config)

def not_a_subject(config):
    return {"chat": "no"}

def crashes(config):
    raise RuntimeError("factory exploded")
'''

CRASHING_MODULE = "raise RuntimeError('import-time failure')\n"

PROBE = '''
import pytest

def test_sync(subject, target):
    assert subject.chat([], model=target.models[0]).text == "hello"

@pytest.mark.subject_needs("async")
def test_needs_async(subject):
    raise AssertionError("must have been skipped")
'''


def run_pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "usersubject.py").write_text(USER_MODULE)
    (tmp_path / "crashmod.py").write_text(CRASHING_MODULE)
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    pytest_bin = Path(sys.executable).with_name("pytest")  # the script: cwd not on sys.path
    return subprocess.run(
        [str(pytest_bin), "-p", "no:cacheprovider", "-rs", "-q", "-o", "addopts=",
         "--rootdir", str(tmp_path), "-o", "asyncio_mode=auto", str(tmp_path / "test_probe.py"),
         *args], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)


def test_user_factory_runs_and_a_missing_capability_skips_with_reason(tmp_path: Path) -> None:
    proc = run_pytest(tmp_path, "--lmstudio-subject", "usersubject:make")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed, 1 skipped" in proc.stdout, proc.stdout
    assert "subject sync-only does not offer: async" in proc.stdout


@pytest.mark.parametrize("spec,message", [
    ("nosuch", "ERROR: unknown subject 'nosuch'"),
    ("crashmod:make", "ERROR: subject 'crashmod:make': importing crashmod failed: "
                      "RuntimeError: import-time failure"),
    ("usersubject:absent", "ERROR: subject 'usersubject:absent': module usersubject has no"),
])
def test_bad_subject_is_a_one_line_usage_error(tmp_path: Path, spec: str, message: str) -> None:
    proc = run_pytest(tmp_path, "--lmstudio-subject", spec)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("spec,message", [
    ("usersubject:not_a_subject", "built dict, which is not a subject (missing name"),
    ("usersubject:crashes", "factory exploded"),
])
def test_factory_failures_fail_each_test_in_one_line(tmp_path: Path, spec: str,
                                                     message: str) -> None:
    proc = run_pytest(tmp_path, "--lmstudio-subject", spec, "-k", "test_sync")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert message in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stdout
