"""A fresh emulator in its own process for one load run (``harness load --emulator``) or a bench.

Why a subprocess: Locust monkey-patches its processes with gevent, and an emulator sharing the
load generator's process (or its core) would be measured together with it. Why fresh: a reused
emulator carries the truth and loaded models of earlier runs. The speed comes from the scenario's
``[emulator]`` table (20 tokens/s by default: a laptop-class model, not the 500 tokens/s test
default that makes the generator, not the server, what is measured).

The process gets its own session (a Ctrl-C at the terminal reaches the runner, which stops it in
order) and, on Linux, dies with its parent (``PR_SET_PDEATHSIG``): it is never orphaned.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.load.scenario import EmulatorShape

READY_TIMEOUT_S = 30.0


class EmulatorError(RuntimeError):
    """The emulator did not start (names the command it was started with)."""


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes a child get SIGTERM when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None

    def preexec() -> None:
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1

    return preexec


class EmulatorProcess:
    """``harness serve --control`` at the scenario's speed on a free loopback port."""

    def __init__(self, shape: EmulatorShape, *, pin: Sequence[str] = (),
                 log_path: Path | None = None, api_token: str | None = None) -> None:
        self.shape = shape
        self.pin = list(pin)
        self.api_token = api_token  # passed by environment, never on the command line
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._tmp = tempfile.TemporaryDirectory(prefix="harness-emulator-")

    def start(self) -> str:
        from harness.studio.catalog import load_catalog
        from harness.studio.server import free_port

        catalog = load_catalog().with_speed(tokens_per_s=self.shape.tokens_per_s,
                                            ttft_s=self.shape.ttft_ms / 1000)
        path = Path(self._tmp.name) / "catalog.json"
        path.write_text(catalog.model_dump_json(), encoding="utf-8")
        port = free_port()
        cmd = [*self.pin, sys.executable, "-m", "harness.cli", "serve", "--port", str(port),
               "--control", "--parallel", str(self.shape.parallel), "--catalog", str(path)]
        log = self.log_path.open("wb") if self.log_path else subprocess.DEVNULL
        try:
            env = dict(os.environ)
            env.pop("HARNESS_API_TOKEN", None)
            if self.api_token:
                env["HARNESS_API_TOKEN"] = self.api_token
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True, preexec_fn=die_with_parent())
        finally:
            if self.log_path:
                log.close()  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.time() + READY_TIMEOUT_S
        while True:
            try:
                urllib.request.urlopen(self.url + "/_harness/state", timeout=1).read()
                return self.url
            except urllib.error.HTTPError:
                return self.url  # it answers (401 behind a token): it is up
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    raise EmulatorError(f"emulator did not start within {READY_TIMEOUT_S:g}s: "
                                        f"{' '.join(cmd)}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self._tmp.cleanup()

    def __enter__(self) -> EmulatorProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
