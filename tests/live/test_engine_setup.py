"""Starting the engine: its config, and a clear stop when it cannot start (runs in CI, where
llama-cpp-python is not installed, and here, where it may be)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.engines.llamacpp import (
    MODEL_ENV,
    EngineError,
    LlamaCppOptions,
    LlamaCppServer,
    missing,
)


def test_config_serves_one_gguf_under_every_alias(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    options = LlamaCppOptions(model_path=gguf, aliases=("a", "b"), interrupt_requests=False,
                              api_key="sk-secret")
    config = options.config("127.0.0.1", 8123)
    assert [m["model_alias"] for m in config["models"]] == ["a", "b"]
    assert {m["model"] for m in config["models"]} == {str(gguf)}
    assert config["host"] == "127.0.0.1" and config["port"] == 8123
    assert config["interrupt_requests"] is False and config["api_key"] == "sk-secret"
    assert all(m["n_threads"] == 1 for m in config["models"])
    json.dumps(config)  # what --config_file reads


def test_a_missing_gguf_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(MODEL_ENV, str(tmp_path / "absent.gguf"))
    reason = missing()
    assert reason is not None
    assert "absent.gguf" in reason or "not installed" in reason, reason
    server = LlamaCppServer()
    with pytest.raises(EngineError, match=r"absent\.gguf|not installed"):
        server.start()
    server.close()


def test_pytest_llama_cpp_without_an_engine_stops_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text("def test_x(target):\n    pass\n")
    env = {**os.environ, MODEL_ENV: str(tmp_path / "absent.gguf")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
         str(tmp_path), "-o", "addopts=", str(tmp_path / "test_x.py"), "--llama-cpp"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, proc.stdout + proc.stderr
    assert "--llama-cpp:" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
