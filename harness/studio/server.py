"""Running an ASGI app (emulator or proxy) on uvicorn, in the foreground or in a thread.

One place decides the server settings both share: uvloop + httptools when installed (the
emulator must not be what a load test measures), no access log on the hot path, and LM Studio's
5 s idle keep-alive (Node's ``Keep-Alive: timeout=5``).
"""

from __future__ import annotations

import gc
import logging
import socket
import threading
import time
from typing import Any

import uvicorn

KEEP_ALIVE_S = 5
_INTENTIONAL_DROP = "ASGI callable returned without completing response."


class _DropFilter(logging.Filter):
    """Dropped connections are injected on purpose (faults, cut-offs): not server errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _INTENTIONAL_DROP


def _event_loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _http() -> str:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def server_config(app: Any, host: str, port: int, *, log_level: str = "warning") -> uvicorn.Config:
    logging.getLogger("uvicorn.error").addFilter(_DropFilter())
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop=_event_loop(),
        http=_http(),
        lifespan="on",
        access_log=False,
        log_level=log_level,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=2,
        backlog=4096,
    )


def settle_gc() -> None:
    """Keep the cyclic GC's full collections short while streams are running.

    A full (gen 2) collection walks every tracked object; right after start-up that is mostly
    modules, classes and functions from imports (pydantic, starlette, typer...), and one such
    pass took 85 ms in the middle of the 1,000-stream benchmark, a lateness spike on every
    stream at once. ``gc.freeze`` moves everything alive now out of the collector's sight (it is
    never garbage anyway), so later passes only walk request objects, and fewer full passes run.
    """
    gc.collect()
    gc.freeze()
    gen0, gen1, _ = gc.get_threshold()
    gc.set_threshold(gen0, gen1, 100)


def serve_forever(app: Any, host: str, port: int, *, log_level: str = "info") -> None:
    """Run in the foreground (``harness serve``/``harness proxy``): this process is the server."""
    settle_gc()
    uvicorn.Server(server_config(app, host, port, log_level=log_level)).run()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now, for a server started in another process (which must bind
    it itself; an in-process server should bind port 0 instead, as ``BackgroundServer`` does)."""
    with socket.socket() as sock:
        sock.bind((host if host != "0.0.0.0" else "127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerStartError(RuntimeError):
    """The background server did not come up in time."""


class BackgroundServer:
    """uvicorn on a free loopback port in a daemon thread; ``stop()`` shuts it down cleanly."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host = host
        self.port: int = self.sock.getsockname()[1]
        self.server = uvicorn.Server(server_config(app, host, self.port))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
            name=f"harness-server-{self.port}",
        )

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 5.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise ServerStartError(f"server thread for {self.base_url} exited during start")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(f"server {self.base_url} not ready after {timeout} s")
            time.sleep(0.002)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout=2)
        self.sock.close()
