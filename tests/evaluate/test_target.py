"""Opening a live target: capability discovery, and set-up errors that are not test failures.

Every server here is real HTTP on loopback: the emulator (with and without a token), and small
Starlette apps standing for what people point the harness at by mistake (a web page, a service
that is no LLM server, an LLM server with nothing loaded). The pytest and ``harness evaluate``
runs are real processes / in-process runs of pytest on a small test file.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from typer.testing import CliRunner

from harness.capabilities import TargetSetupError, check_models, discover
from harness.cli import app
from harness.evaluate.target import TargetError, live_target
from harness.studio.server import BackgroundServer, free_port
from harness.studio.testing import running_studio

TOKEN = "sk-lm-target:L1VE-secret"


@contextmanager
def serving(handler: Callable[[Request], Response]) -> Iterator[str]:
    """A real server answering every GET/POST path with ``handler``."""
    async def endpoint(request: Request) -> Response:
        return handler(request)

    server = BackgroundServer(Starlette(routes=[Route("/{path:path}", endpoint,
                                                      methods=["GET", "POST"])]))
    server.start()
    try:
        yield server.base_url
    finally:
        server.stop()


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def setup_error(base_url: str, token: str | None = None,
                models: tuple[str, ...] = ()) -> TargetSetupError:
    with pytest.raises(TargetSetupError) as caught:
        live_target(base_url, token, models, generate=False)
    assert isinstance(caught.value, TargetError)  # what the plugin and the runner catch
    assert "\n" not in str(caught.value), str(caught.value)
    return caught.value


def test_unreachable_server_is_unreachable() -> None:
    url = closed_url()
    error = setup_error(url)
    assert error.reason == "unreachable" and url in str(error), str(error)
    assert pickle.loads(pickle.dumps(error)).reason == "unreachable"  # crosses xdist workers


def test_a_401_is_refused_not_unreachable() -> None:
    with running_studio(api_token=TOKEN) as studio:
        without = setup_error(studio.base_url)
        wrong = setup_error(studio.base_url, "sk-lm-target:wrong-one")
        target = live_target(studio.base_url, TOKEN, (), generate=False)
    assert without.reason == wrong.reason == "refused"
    assert "requires an API token" in str(without), str(without)
    assert "refused the API token" in str(wrong) and "HTTP 401" in str(wrong), str(wrong)
    assert "wrong-one" not in str(wrong) and "not reachable" not in str(wrong)
    assert target.can("auth") and "qwen/qwen3-4b" in target.models
    assert TOKEN not in repr(target.info)


@pytest.mark.parametrize("name,handler,reason,says", [
    ("html page", lambda _: HTMLResponse("<html><body><h1>Welcome to nginx!</h1></body></html>"),
     "not-llm-server", "not an OpenAI-compatible LLM server"),
    ("not an llm server", lambda _: JSONResponse({"detail": "Not Found"}, status_code=404),
     "not-llm-server", "HTTP 404"),
    ("plain text", lambda _: PlainTextResponse("ok"), "not-llm-server", "not JSON"),
    ("no models", lambda _: JSONResponse({"object": "list", "data": []}), "no-models",
     "lists no chat models"),
], ids=["html", "404", "text", "empty"])
def test_bad_input_is_one_line_target_error(name: str, handler: Callable[[Request], Response],
                                            reason: str, says: str) -> None:
    with serving(handler) as url:
        error = setup_error(url)
    assert error.reason == reason and says in str(error) and url in str(error), str(error)


def test_unknown_models_are_named_with_the_closest_before_any_test() -> None:
    with running_studio() as studio:
        error = setup_error(studio.base_url, models=("qwen/qwen3-4b", "qwen3-4bb"))
    assert error.reason == "unknown-model", str(error)
    assert "'qwen3-4bb' (closest: qwen/qwen3-4b" in str(error), str(error)
    assert "'qwen/qwen3-4b' (" not in str(error)  # the known one is not blamed


def test_check_models_keeps_the_order_asked_for() -> None:
    listed = ("a", "b", "c")
    assert check_models("http://x", ("c", "a"), listed) == ("c", "a")
    assert check_models("http://x", (), listed) == listed


def test_discovery_on_the_emulator_finds_lm_studio_and_generates() -> None:
    with running_studio() as studio:
        profile = discover(studio.base_url)
    assert {"openai", "native_v0", "native_v1", "load_unload", "stream_usage"} \
        <= profile.capabilities, profile.findings
    assert "auth" not in profile.capabilities
    assert "qwen/qwen3-4b" in profile.chat_models
    assert all(m not in profile.chat_models for m in ("text-embedding-nomic-embed-text-v1.5",))
    [sample] = profile.samples
    assert sample.usage and sample.ttft_s is not None and sample.total_s >= sample.ttft_s
    assert {f.name for f in profile.findings} >= {"openai", "native_v0", "tools", "reasoning"}


def test_an_openai_only_server_has_no_native_capabilities() -> None:
    """A gateway that passes only /v1/ through (as llama.cpp, vLLM and Ollama serve): the
    native probes see 404s, which are absent capabilities, not errors."""
    models = {"object": "list", "data": [{"id": "m-1", "object": "model"},
                                         {"id": "m-2", "object": "model"}]}

    def handler(request: Request) -> Response:
        if request.url.path == "/v1/models":
            return JSONResponse(models)
        return JSONResponse({"error": "not found"}, status_code=404)

    with serving(handler) as url:
        target = live_target(url, None, (), generate=False)
        profile = discover(url, generate=False)
    assert target.models == ("m-1", "m-2") and target.can("openai")
    for absent in ("native_v0", "native_v1", "load_unload", "faults"):
        assert not target.can(absent)
    reason = target.missing("native_v0", "faults")
    assert reason is not None and "HTTP 404" in reason and "--via-proxy" in reason, reason
    assert not profile.samples  # generate=False: no tokens spent


PROBE = '''
import pytest

def test_one(target):
    pass

def test_two(target):
    pass

@pytest.mark.target_needs(models=4)
def test_needs_four_models(target):
    pass

def test_needs_two_models_by_index(target):
    target.model(1)

@pytest.mark.target_needs("native_v1", "tools")
def test_needs_native(target):
    pass
'''


def run_pytest(tmp_path: Path, *args: str, probe: str = PROBE
               ) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(probe)
    env = {k: v for k, v in os.environ.items() if k != "LMSTUDIO_API_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", "-q",
         "--rootdir", str(tmp_path), "-o", "addopts=", str(tmp_path / "test_probe.py"), *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=90, env=env)


def test_pytest_stops_at_a_bad_target_with_one_line(tmp_path: Path) -> None:
    proc = run_pytest(tmp_path, "--lmstudio-url", closed_url())
    out = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, out
    assert out.count("target error:") == 1 and "is not reachable" in out, out
    assert "error" not in out.lower().replace("target error", "").replace(
        "connecterror", ""), out  # no per-test errors


def test_too_few_models_and_missing_capabilities_are_skips(tmp_path: Path) -> None:
    with running_studio() as studio:
        proc = run_pytest(tmp_path, "--lmstudio-url", studio.base_url,
                          "--lmstudio-models", "qwen/qwen3-4b")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "2 passed, 3 skipped" in out, out
    assert "needs 4 models, target live has 1 (qwen/qwen3-4b)" in out, out
    assert "needs 2 models, target live has 1" in out, out
    assert "cannot provide: tools" in out, out  # forced tool_choice is not scripted


def test_evaluate_reports_a_target_error_with_its_own_exit_code(tmp_path: Path) -> None:
    url = closed_url()
    result = CliRunner().invoke(app, ["evaluate", "--base-url", url, "--out", str(tmp_path),
                                      "-k", "test_tokens_arrive_incrementally"])
    assert result.exit_code == 3, result.output
    assert "target error:" in result.output and url in result.output, result.output
    assert "Traceback" not in result.output and "FAIL " not in result.output, result.output
    data = json.loads((tmp_path / "evaluation.json").read_text())
    assert data["target_error"] and data["totals"]["failed"] == 0, data


RECORDED_PROBE = '''
import pytest

def test_answer(client, target):
    r = client.chat([{"role": "user", "content": "hi"}], seed=1)
    assert r.finish_reason in ("stop", "length") and r.model == target.models[0]

def test_branches_on_what_the_target_has(client, target):
    """Runs only where the server streams usage: on replay that is the recorded target's
    finding (an empty replay target would skip it)."""
    if not target.can("stream_usage"):
        pytest.skip("no usage in streams")
    assert target.calibration.ttft_s is not None  # the recorded calibration, not unscaled
    assert client.chat([{"role": "user", "content": "again"}], seed=2).text

def test_sends_nothing(target):
    """Ran while recording without a single exchange: replays from an empty cassette."""
    assert target.models and target.info["models"]

def test_needs_a_live_socket(target):
    target.require("realtime")  # recording reads whole responses: skips in the body

@pytest.mark.needs_faults
def test_needs_faults(target):
    pass

@pytest.mark.target_needs("tools")
def test_needs_tools(target):
    pass
'''


def outcomes(out: str) -> str:
    return out.strip().splitlines()[-1].split(" in ")[0]


def test_replay_gives_the_recording_s_passes_and_skips_with_the_engine_stopped(
        tmp_path: Path) -> None:
    """Tests that skipped while recording (capability missing on the server) skip on replay
    with the recorded reason instead of failing on a missing cassette; tests that ran replay
    against the target they were recorded with (capabilities, calibration)."""
    cassettes = tmp_path / "cassettes"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_pytest(tmp_path, "--lmstudio-cassette-dir", str(cassettes), *args,
                          probe=RECORDED_PROBE)

    with running_studio(api_token=TOKEN) as studio:
        recorded = run("--lmstudio-url", studio.base_url, "--lmstudio-api-token", TOKEN,
                       "--lmstudio-record")
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    assert outcomes(recorded.stdout) == "3 passed, 3 skipped", recorded.stdout
    runs = {p.name: json.loads(p.read_text()) for p in cassettes.rglob("*.target.json")}
    assert len(runs) == 6 and all(TOKEN not in json.dumps(r) for r in runs.values()), runs
    assert runs["test_needs_tools.target.json"]["outcome"] == "skipped"
    assert not (cassettes / "test_probe" / "test_needs_tools.yaml").exists()
    assert (cassettes / "test_probe" / "test_sends_nothing.yaml").read_text() == \
        "interactions: []\nversion: 1\n"

    replayed = run("--lmstudio-replay")  # the server is gone
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert outcomes(replayed.stdout) == "3 passed, 3 skipped", replayed.stdout
    assert "skipped when recorded against LM Studio (live): target live" \
           in replayed.stdout and "cannot provide: tools" in replayed.stdout, replayed.stdout
    assert "no cassette" not in replayed.stdout

    # A test that skipped while recording and is recorded again: its stale cassette goes.
    stale = cassettes / "test_probe" / "test_needs_faults.yaml"
    stale.write_text("interactions: []\nversion: 1\n")
    with running_studio(api_token=TOKEN) as studio:
        again = run("--lmstudio-url", studio.base_url, "--lmstudio-api-token", TOKEN,
                    "--lmstudio-record", "-k", "needs_faults")
    assert again.returncode == 0 and not stale.exists(), again.stdout + again.stderr
