"""One engine server as a child process: start it, wait until it answers, read its log, stop it.

Shared by the engines the harness can start (``llamacpp``: llama-cpp-python's server,
``llamaserver``: llama.cpp's own C++ ``llama-server``); each says only its command and which URL
answers 200 once it is ready. The child gets its own session, so stopping it never signals the
test run, and only this process is ever terminated.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx


class EngineError(RuntimeError):
    """The engine could not start or stopped on its own; names the command and its log tail."""


class EngineProcess:
    """A server child process on ``127.0.0.1:<free port>``; subclasses give ``command``."""

    name = "engine"
    ready_path = "/v1/models"  # answers 200 once the server can take requests

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None,
                 api_key: str | None = None) -> None:
        from harness.studio.server import free_port

        self.host = host
        self.port = port or free_port(host)
        self.api_key = api_key
        self._dir = tempfile.TemporaryDirectory(prefix="harness-engine-")
        self.workdir = Path(self._dir.name)
        self.log_path = self.workdir / "server.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.started_in_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def models(self) -> tuple[str, ...]:
        """The model names it serves."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Before the process starts (write its config); raise ``EngineError`` if it cannot."""

    def start(self, timeout: float = 120.0) -> None:
        self.prepare()
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        while True:
            if self._process.poll() is not None:
                raise EngineError(f"{self.name} exited with {self._process.returncode} during "
                                  f"start: {' '.join(self.command)}\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}{self.ready_path}", headers=headers,
                             timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > timeout:
                self.stop()
                raise EngineError(f"{self.name} did not answer GET {self.ready_path} within "
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


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve_foreground(server: EngineProcess, serving: str) -> int:
    """Run ``server`` until Ctrl-C or SIGTERM (which stop the child too); 1 if it dies."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.start()
        print(f"{server.name} on {server.base_url} serving {serving} (started in "
              f"{server.started_in_s:.1f}s; Ctrl-C stops it)", flush=True)
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
