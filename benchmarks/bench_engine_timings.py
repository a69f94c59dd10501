"""The harness's TTFT and inter-token latency against llama.cpp's own per-request ``timings``.

One small, bounded ``harness load`` scenario (closed loop, ``--levels`` users, ``--seconds`` per
level, SmolLM2-135M, ``--max-tokens`` per answer, temperature 0) against llama.cpp's C++
``llama-server`` (``harness.engines.llamaserver``; build it first with ``python -m
harness.engines.llamaserver --build``), which measures each answer itself and sends the result
on the stream's last chunk. Per request, paired inside the same record:

- TTFT: harness ``t_first_token - t_send`` against the server's ``prompt_ms`` (prompt
  processing). The difference is what the server does not count: the HTTP exchange, the wait
  for a slot when another request holds it, and the first decode step.
- ITL: the harness's per-request mean gap between content chunks against the server's
  ``predicted_per_token_ms`` (its decode time per generated token). Their ratio is ~1 when the
  harness reads each chunk as it is written.
- tokens per chunk: the server's ``usage.completion_tokens`` over the chunks the harness
  counted (1.0: chunk counting is exact on this server, which is what the harness relies on
  for servers that send no usage).

``--engine llama-cpp-python`` (or ``both``) runs the same scenario on llama-cpp-python's server,
which streams no usage and no timings: the run must still be valid, its token counts "counted
from stream chunks".

    .venv/bin/python benchmarks/bench_engine_timings.py
        [--engine llama-server|llama-cpp-python|both] [--levels 1,2] [--seconds 12]
        [--max-tokens 32]

Numbers depend on this machine's load (printed with each run); the ratios are the point.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.engines.llamacpp import LlamaCppOptions, LlamaCppServer  # noqa: E402
from harness.engines.llamacpp import missing as llamacpp_missing  # noqa: E402
from harness.engines.llamaserver import LlamaServer  # noqa: E402
from harness.engines.llamaserver import missing as llamaserver_missing  # noqa: E402
from harness.engines.process import EngineProcess  # noqa: E402
from harness.load.metrics import RequestRecord, percentile  # noqa: E402

PROMPT = "Write three sentences about the sea."


def scenario(model: str, levels: list[int], seconds: float, max_tokens: int) -> str:
    return f"""name = "engine-timings"
description = "Harness TTFT/ITL against llama.cpp's own timings (bench_engine_timings.py)"

[request]
endpoint = "chat"
models = ["{model}"]
prompt = "{PROMPT}"
max_tokens = {max_tokens}
temperature = 0
seed = 7

[load]
mode = "closed"
levels = {levels}
level_duration_s = {seconds}
warmup_s = 2
drain_s = 60
"""


def run_load(server: EngineProcess, model: str, args: argparse.Namespace, out: Path
             ) -> tuple[int, dict[str, Any], list[RequestRecord]]:
    path = out / "scenario.toml"
    path.write_text(scenario(model, args.levels, args.seconds, args.max_tokens))
    harness = Path(sys.executable).parent / "harness"
    proc = subprocess.run([str(harness), "load", "--scenario", str(path), "--base-url",
                           server.base_url, "--out", str(out / "run")],
                          capture_output=True, text=True, timeout=600)
    print(proc.stdout[-3000:], proc.stderr[-2000:], sep="\n")
    summary = json.loads((out / "run" / "summary.json").read_text())
    records = [RequestRecord.from_json(json.loads(line))
               for line in (out / "run" / "requests.jsonl").read_text().splitlines() if line]
    return proc.returncode, summary, records


def stats(values: list[float]) -> str:
    if not values:
        return "-"
    p50, p95 = percentile(values, 50), percentile(values, 95)
    return f"min {min(values):.3f}  p50 {p50:.3f}  p95 {p95:.3f}  (n={len(values)})"


def compare(records: list[RequestRecord]) -> dict[str, Any]:
    measured = [r for r in records if r.ok and not r.warmup]
    out: dict[str, Any] = {}
    for level in sorted({r.level for r in measured}):
        rs = [r for r in measured if r.level == level]
        timed = [r for r in rs if r.server_ttft_s is not None and r.ttft is not None]
        itl = [r for r in timed if r.itl is not None and r.server_itl_s]
        row = {
            "requests": len(rs),
            "harness TTFT ms": [r.ttft * 1000 for r in rs if r.ttft is not None],
            "server prompt_ms": [r.server_ttft_s * 1000 for r in timed if r.server_ttft_s],
            "TTFT - prompt_ms (ms)": [(r.ttft - r.server_ttft_s) * 1000 for r in timed
                                      if r.ttft is not None and r.server_ttft_s is not None],
            "harness ITL ms": [r.itl * 1000 for r in rs if r.itl is not None],
            "server predicted_per_token_ms": [r.server_itl_s * 1000 for r in itl
                                              if r.server_itl_s],
            "ITL / predicted_per_token_ms": [r.itl / r.server_itl_s for r in itl
                                             if r.itl is not None and r.server_itl_s],
            "ITL - predicted_per_token_ms (ms)": [(r.itl - r.server_itl_s) * 1000 for r in itl
                                                  if r.itl is not None and r.server_itl_s],
            "harness TPOT / predicted_per_token_ms": [r.tpot / r.server_itl_s for r in itl
                                                      if r.tpot and r.server_itl_s],
            "tokens per chunk (usage / chunks)": [r.n_server / r.chunks for r in rs
                                                  if r.n_server is not None and r.chunks],
        }
        out[f"level {level}"] = row
    return out


def engine(name: str) -> tuple[EngineProcess | None, str | None]:
    if name == "llama-server":
        reason = llamaserver_missing()
        return (None, reason) if reason else (LlamaServer(), None)
    reason = llamacpp_missing()
    return (None, reason) if reason else (LlamaCppServer(LlamaCppOptions(
        interrupt_requests=False)), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("llama-server", "llama-cpp-python", "both"),
                        default="llama-server")
    parser.add_argument("--levels", default="1,2",
                        type=lambda s: [int(x) for x in s.split(",") if x])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    names = ["llama-server", "llama-cpp-python"] if args.engine == "both" else [args.engine]
    results: dict[str, Any] = {}
    for name in names:
        server, reason = engine(name)
        if server is None:
            print(f"{name}: cannot run: {reason}")
            results[name] = {"skipped": reason}
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                server.start()
                model = server.models[0]
                print(f"== {name} on {server.base_url} ({model}), load average "
                      f"{os.getloadavg()[0]:.1f} at start")
                started = time.monotonic()
                code, summary, records = run_load(server, model, args, Path(tmp))
            finally:
                server.close()
        gate = next((g for g in summary["gates"] if g["name"].startswith("server token")),
                    None)
        results[name] = {"exit_code": code, "verdict": summary["verdict"],
                         "token_counts": summary.get("token_counts"),
                         "usage gate": gate, "ran_s": round(time.monotonic() - started, 1),
                         "load_average_end": round(os.getloadavg()[0], 1),
                         "crosscheck": summary.get("server_crosscheck"),
                         "levels": compare(records)}
        print(f"-- {name}: verdict {summary['verdict']} (exit {code}); token counts: "
              f"{summary.get('token_counts')}; load average {os.getloadavg()[0]:.1f}")
        for level, row in results[name]["levels"].items():
            print(f"  {level}: {row['requests']} requests")
            for key, values in row.items():
                if key != "requests":
                    print(f"    {key:40s} {stats(values)}")
    print(json.dumps({n: {k: v for k, v in r.items() if k != "levels"}
                      for n, r in results.items()}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
