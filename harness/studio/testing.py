"""Start the emulator in-process for tests: ``running_studio()`` and the ``studio`` fixture.

The server runs on uvicorn in a background thread on a free loopback port, so tests talk to it
over real HTTP while still reaching the engine directly for ground truth. Engine calls that
mutate state run on the server's event loop (``call``), never from the test thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from harness.faults import FaultPlan
from harness.studio.app import StudioState, create_app
from harness.studio.catalog import Catalog, load_catalog
from harness.studio.engine import Engine, EngineOptions
from harness.studio.server import BackgroundServer
from harness.studio.stress import Stress

T = TypeVar("T")


class StudioHandle:
    """A running emulator: its URL, its engine (for truth) and control helpers."""

    def __init__(self, server: BackgroundServer, state: StudioState) -> None:
        self.server = server
        self.state = state
        self.engine: Engine = state.engine

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def port(self) -> int:
        return self.server.port

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run a coroutine on the server's event loop and return its result."""
        loop = self.engine.loop
        if loop is None:
            raise RuntimeError(f"emulator at {self.base_url} has no running event loop")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    def set_faults(self, plan: FaultPlan) -> None:
        async def apply() -> None:
            self.state.set_faults(plan)

        self.call(apply())

    def clear_faults(self) -> None:
        async def apply() -> None:
            self.state.set_faults(None)

        self.call(apply())

    def truth(self, since: int = 0) -> list[dict[str, Any]]:
        async def read() -> list[dict[str, Any]]:
            return [r.as_dict() for r in self.engine.truth.records(since)]

        return self.call(read())

    def counters(self) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            return {k: v.as_dict() for k, v in self.engine.counters.items()}

        return self.call(read())

    def reset(self) -> None:
        self.call(self.state.reset())


@contextmanager
def running_studio(
    *,
    catalog: Path | Catalog | None = None,
    faults: FaultPlan | None = None,
    api_token: str | None = None,
    control: bool = True,
    clock: Any = None,
    cors: bool = False,
    stress: Stress | None = None,
    **engine_options: Any,
) -> Iterator[StudioHandle]:
    """Run the emulator on ``127.0.0.1:<free port>`` for the duration of the block; ``stress``
    makes every stream hard on clients (``harness.studio.stress``) unless a request opts out."""
    cat = catalog if isinstance(catalog, Catalog) else load_catalog(catalog)
    if "preload" in engine_options:
        engine_options["preload"] = tuple(engine_options["preload"])
    engine = Engine(cat, EngineOptions(**engine_options), clock=clock)
    app = create_app(engine, api_token=api_token, control=control, faults=faults, cors=cors,
                     stress=stress)
    server = BackgroundServer(app)
    server.start()
    try:
        yield StudioHandle(server, app.state.studio)
    finally:
        server.stop()
