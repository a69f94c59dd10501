"""How many concurrent streaming users one Locust worker process sustains, harness vs openai SDK.

Setup: the emulator runs in its own process pinned to CPU 0 (``taskset``), every model at 20
tokens/s with a 50 ms TTFT and 2048 parallel slots (no server-side queueing); one Locust process
(a single runner: the "one worker") is pinned to CPU 1. For each user class and each level of
concurrent users, a closed-loop run of ``--seconds`` (after a warm-up) is measured, and its TTFT
is compared request by request with the emulator's ground truth (``/_harness/truth``). A level is
*sustained* when the p95 of |client TTFT - true TTFT| is at most 5 ms and no request failed.

    .venv/bin/python benchmarks/bench_load.py [--levels 100,200,400,600,800,1000] [--seconds 8]

Prints one line per run and the headline: max sustained users (harness) / (openai SDK).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.studio.catalog import load_catalog  # noqa: E402
from harness.studio.server import free_port  # noqa: E402

ERROR_LIMIT_MS = 5.0


def _pin(cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > cpu:
        return ["taskset", "-c", str(cpu)]
    return []


def start_emulator(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    catalog = load_catalog().with_speed(tokens_per_s=20.0, ttft_s=0.05, load_time_s=0.05,
                                        reply_tokens=(20, 30))
    path = work / "catalog.json"
    path.write_text(catalog.model_dump_json())
    port = free_port()
    proc = subprocess.Popen(
        [*_pin(0), sys.executable, "-m", "harness.cli", "serve", "--port", str(port),
         "--control", "--parallel", "2048", "--catalog", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 20
    while True:
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=1).read()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError("emulator did not start") from None
            time.sleep(0.1)


def scenario_file(work: Path, seconds: float, warmup: float) -> Path:
    path = work / "bench.toml"
    path.write_text(f"""
name = "bench"
[request]
endpoint = "chat"
models = ["qwen/qwen3-4b"]
max_tokens = 32
[load]
mode = "closed"
levels = [1]
level_duration_s = {seconds + warmup}
warmup_s = {warmup}
drain_s = 5
""")
    return path


def run_level(url: str, scenario: Path, users: int, user_class: str, work: Path) -> dict:
    out = work / f"{user_class}-{users}"
    env = dict(os.environ, HARNESS_LOAD_USER=user_class)
    cmd = [*_pin(1), sys.executable, "-m", "locust", "-f", str(ROOT / "suites/load/locustfile.py"),
           "--headless", "--host", url, "--scenario", str(scenario), "--harness-out", str(out),
           "--harness-users", str(users), "--only-summary", "--loglevel", "ERROR"]
    subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=180, check=False)
    summary = json.loads((out / "summary.json").read_text())
    level = summary["levels"][0]
    truth = summary.get("truth") or {}
    err = (truth.get("ttft_abs_error_ms") or {}).get("p95")
    cpu = next((g["detail"] for g in summary["gates"] if g["name"] == "load generator CPU"), "-")
    return {"users": users, "class": user_class, "requests": level["requests"],
            "errors": level["errors"], "ttft_err_p95_ms": err, "paired": truth.get("paired"),
            "ttft_p95_ms": level["ttft_ms"]["p95"], "cpu": cpu,
            "sustained": err is not None and err <= ERROR_LIMIT_MS and level["errors"] == 0
            and level["requests"] > 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="100,200,400,600,800,1000")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--openai-levels", default="25,50,100,200")
    parser.add_argument("--classes", default="harness,openai")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    best: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        emulator, url = start_emulator(work)
        try:
            scenario = scenario_file(work, args.seconds, args.warmup)
            for user_class in args.classes.split(","):
                best[user_class] = 0
                steps = levels if user_class == "harness" else [
                    int(x) for x in args.openai_levels.split(",")]
                for users in steps:
                    row = run_level(url, scenario, users, user_class, work)
                    print(f"{user_class:8s} users={users:5d} requests={row['requests']:6d} "
                          f"errors={row['errors']:4d} paired={row['paired']} "
                          f"TTFT p95={row['ttft_p95_ms'] or 0:7.2f} ms "
                          f"|TTFT error| p95={row['ttft_err_p95_ms'] or float('nan'):6.2f} ms "
                          f"cpu {row['cpu']} -> {'ok' if row['sustained'] else 'NOT sustained'}",
                          flush=True)
                    if not row["sustained"]:
                        break
                    best[user_class] = users
        finally:
            emulator.terminate()
            emulator.wait(timeout=10)
    print("max sustained users at 20 tok/s with |TTFT error| p95 <= 5 ms (one worker process):")
    for name, users in best.items():
        print(f"  {name}: {users}")
    if best.get("openai"):
        print(f"ratio harness/openai: {best.get('harness', 0) / best['openai']:.2f}x")
    elif "openai" in best:
        print("ratio harness/openai: openai SDK user sustained none of the tested levels")


if __name__ == "__main__":
    main()
