"""Concurrent streaming users one Locust worker process sustains, and how right its TTFT is:
the harness user against the openai-SDK user (and GuideLLM, when installed), one run, ratios.

Setup: a fresh emulator pinned to CPU 0 (``taskset``) streams every model at 20 tokens/s with a
50 ms TTFT and 4096 parallel slots (no server-side queueing); one Locust process (a single
runner: "one worker") is pinned to CPU 1. For each user class and each level of concurrent
users, a closed-loop run of ``--seconds`` (after a warm-up) is measured and its TTFT compared
request by request with the emulator's ground truth (``/_harness/truth``, paired by the
``X-Request-Id`` both users send). A level is *sustained* when the p95 of |client TTFT - true
TTFT| is at most 5 ms and no request failed. The harness ladder runs ``--runs`` times: the
capacity claimed is the level sustained in EVERY run.

Per-chunk CPU is the worker's CPU seconds over the measured window divided by the chunks it
read (``psutil`` on the Locust process); the machine's load average is printed with each run,
because on a shared machine the numbers are depressed and only the ratios travel.

Why a level fails, printed with it: ``late>5ms`` (first tokens over 5 ms late against the
truth), ``merged first reads`` (first tokens read together with later tokens: the worker was
more than a token interval behind, the kernel had merged the packets under the newer one's
stamp, so the TTFT is a whole frame late), ``waited for CPU`` (the worker's run-queue wait
over the window, ``/proc/<pid>/schedstat``: time other processes took from its core) and
``idle`` (the rest of the window, neither running nor waiting: none left means the worker is
saturated with the CPU it gets, and its reads fall behind). Late first tokens that are all
merged reads, with seconds of CPU wait, are a busy machine, not the worker's own cost.
``benchmarks/bench_reader_loop.py`` prices the loop without gevent.

    .venv/bin/python benchmarks/bench_load.py [--levels 100,200,400,600,800,1000]
        [--openai-levels 25,50,100,200] [--seconds 8] [--runs 1] [--guidellm]

``--guidellm`` also drives GuideLLM (``pip install guidellm``, its own environment is fine:
``--guidellm-bin``) at the same concurrency against the same emulator and compares the TTFT it
reports with the emulator's truth for the same window (GuideLLM sends no request ids, so the
comparison is of medians, not per request).
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.control import ControlClient  # noqa: E402
from harness.load.emulator import EmulatorProcess  # noqa: E402
from harness.load.metrics import percentile  # noqa: E402
from harness.load.scenario import EmulatorShape  # noqa: E402
from harness.load.stalls import run_queue_wait_s  # noqa: E402
from harness.load.truth import _first_token_s, generation_truth  # noqa: E402

ERROR_LIMIT_MS = 5.0
SPEED = EmulatorShape(tokens_per_s=20.0, ttft_ms=50.0, parallel=4096)


PIN = True


def _pin(cpu: int) -> list[str]:
    if PIN and shutil.which("taskset") and (os.cpu_count() or 1) > cpu:
        return ["taskset", "-c", str(cpu)]
    return []


def scenario_file(work: Path, seconds: float, warmup: float, read_batch_ms: float = 0.0,
                  name: str = "bench") -> Path:
    path = work / f"{name}.toml"
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
read_batch_ms = {read_batch_ms}
[gates]
cpu_percent_max = 100
""")
    return path


def run_level(url: str, scenario: Path, users: int, user_class: str, work: Path,
              seconds: float, warmup: float) -> dict[str, Any]:
    import psutil

    out = work / f"{user_class}-{users}-{time.time():.0f}"
    env = dict(os.environ, HARNESS_LOAD_USER=user_class)
    cmd = [*_pin(1), sys.executable, "-m", "locust", "-f", str(ROOT / "suites/load/locustfile.py"),
           "--headless", "--host", url, "--scenario", str(scenario), "--harness-out", str(out),
           "--harness-users", str(users), "--only-summary", "--loglevel", "ERROR"]
    load = os.getloadavg()[0]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    watched = psutil.Process(proc.pid)
    cpu_start: tuple[float, float] | None = None
    cpu_end: tuple[float, float] | None = None
    first_record: float | None = None
    waited = [0.0, 0.0]
    while proc.poll() is None and cpu_end is None:  # after the warm-up, for `seconds`
        time.sleep(0.2)
        now = time.time()
        if first_record is None and (out / "requests.jsonl").exists():
            first_record = now
        try:
            if cpu_start is None and first_record is not None and now - first_record >= warmup:
                times = watched.cpu_times()
                cpu_start = (now, times.user + times.system)
                waited[0] = run_queue_wait_s(proc.pid)
            elif cpu_start is not None and now - cpu_start[0] >= seconds:
                times = watched.cpu_times()
                cpu_end = (now, times.user + times.system)
                waited[1] = run_queue_wait_s(proc.pid)
        except psutil.Error:
            break
    proc.wait(timeout=180)
    summary = json.loads((out / "summary.json").read_text())
    level = summary["levels"][0]
    truth = summary.get("truth") or {}
    err = (truth.get("ttft_abs_error_ms") or {}).get("p95")
    rows = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    measured = [r for r in rows if not r["warmup"] and r["ok"]]
    merged = sum(r.get("first_read_tokens", 1) > 1 for r in measured)
    cpu_pct = per_chunk_us = idle_ms = None
    if cpu_start is not None and cpu_end is not None:
        wall, cpu = cpu_end[0] - cpu_start[0], cpu_end[1] - cpu_start[1]
        cpu_pct = 100 * cpu / wall
        idle_ms = 1000 * (wall - cpu - (waited[1] - waited[0]))
        chunks = sum(r["chunks"] for r in rows
                     if cpu_start[0] <= (r["t_done"] or 0) <= cpu_end[0])
        per_chunk_us = 1e6 * cpu / chunks if chunks else None
    return {"users": users, "class": user_class, "requests": level["requests"],
            "errors": level["errors"], "ttft_err_p95_ms": err, "paired": truth.get("paired"),
            "ttft_p95_ms": level["ttft_ms"]["p95"], "cpu_pct": cpu_pct,
            "per_chunk_us": per_chunk_us, "load": load,
            "late": truth.get("late_first_tokens"), "merged_first_reads": merged,
            "cpu_wait_ms": 1000 * (waited[1] - waited[0]) if cpu_end is not None else None,
            "idle_ms": idle_ms,
            "sustained": err is not None and err <= ERROR_LIMIT_MS and level["errors"] == 0
            and level["requests"] > 0}


def _line(row: dict[str, Any]) -> str:
    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    return (f"{row['class']:8s} users={row['users']:5d} requests={row['requests']:6d} "
            f"errors={row['errors']:4d} paired={row['paired']} "
            f"|TTFT error| p95={f(row['ttft_err_p95_ms'], '6.2f')} ms "
            f"late>5ms={f(row.get('late'), 'd')} merged first reads="
            f"{f(row.get('merged_first_reads'), 'd')} "
            f"cpu={f(row['cpu_pct'], '.0f')}% per chunk={f(row['per_chunk_us'], '.0f')} us "
            f"waited for CPU={f(row.get('cpu_wait_ms'), '.0f')} ms "
            f"idle={f(row.get('idle_ms'), '.0f')} ms "
            f"loadavg={row['load']:.1f} -> {'ok' if row['sustained'] else 'NOT sustained'}")


def ladder(url: str, scenario: Path, levels: list[int], user_class: str, work: Path,
           seconds: float, warmup: float) -> tuple[int, list[dict[str, Any]]]:
    best, rows = 0, []
    for users in levels:
        row = run_level(url, scenario, users, user_class, work, seconds, warmup)
        rows.append(row)
        print(_line(row), flush=True)
        if not row["sustained"]:
            break
        best = users
    return best, rows


def guidellm(url: str, binary: str, users: int, seconds: float, work: Path) -> dict[str, Any]:
    """GuideLLM (0.8 CLI) at ``users`` concurrent streams for ``seconds`` against the emulator:
    its reported TTFT against the truth of the same window, and its CPU (all its processes)."""
    import psutil

    control = ControlClient(url)
    since = control.truth_last_id()
    prompts = work / "guidellm-prompts.json"
    prompts.write_text(json.dumps([{"prompt": "Write a short paragraph about load testing."}]
                                  * max(1000, users * 20)))
    out = work / f"guidellm-{users}.json"
    cmd = [*_pin(1), binary, "run", "--backend", f"kind=openai_http,target={url}",
           "--profile", f"kind=concurrent,streams={users}",
           "--constraint", f"kind=max_duration,seconds={seconds:g}",
           "--data", f"kind=json_file,path={prompts}", "--output", f"kind=json,path={out}",
           "--disable-console"]
    started = time.time()
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tree = [psutil.Process(proc.pid)]
    cpu = 0.0
    while proc.poll() is None:
        time.sleep(0.5)
        try:
            tree = [tree[0], *tree[0].children(recursive=True)]
            cpu = sum(p.cpu_times().user + p.cpu_times().system for p in tree)
        except psutil.Error:
            pass
    wall = time.time() - started
    truth = [t for t in generation_truth(control.truth(since, page=500))
             if t.get("status") == 200 and t.get("stream")]
    control.close()
    if proc.returncode != 0 or not out.exists():
        return {"error": (proc.stderr.read().decode() if proc.stderr else "")[-600:]}
    true_ttfts = [first * 1000 for t in truth if (first := _first_token_s(t)) is not None]
    reported = [r["time_to_first_token_ms"]
                for b in json.loads(out.read_text()).get("benchmarks", [])
                for r in b.get("requests", {}).get("successful", [])
                if isinstance(r.get("time_to_first_token_ms"), int | float)]
    rep, tru = percentile(reported, 50), percentile(true_ttfts, 50)
    return {"streams": users, "requests": len(reported), "truth_requests": len(true_ttfts),
            "reported_ttft_p50_ms": rep, "true_ttft_p50_ms": tru,
            "ttft_p50_error_ms": None if rep is None or tru is None else rep - tru,
            "cpu_pct_whole_run": 100 * cpu / wall if wall else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="100,200,400,600,800,1000")
    parser.add_argument("--openai-levels", default="25,50,100,200")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=1, help="harness ladders (capacity = min)")
    parser.add_argument("--classes", default="harness,openai",
                        help="harness, harness-batched (reads batched every --read-batch-ms "
                             "after the first token), openai")
    parser.add_argument("--read-batch-ms", type=float, default=200.0)
    parser.add_argument("--no-pin", action="store_true",
                        help="no taskset: on a machine shared with other work, a pinned worker "
                             "waits for its one core behind everything else scheduled there")
    parser.add_argument("--guidellm", action="store_true")
    parser.add_argument("--guidellm-bin", default=shutil.which("guidellm") or "guidellm")
    parser.add_argument("--guidellm-streams", default="50,100,200")
    args = parser.parse_args()
    global PIN
    PIN = not args.no_pin
    best: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with EmulatorProcess(SPEED, pin=_pin(0)) as emulator:
            plain = scenario_file(work, args.seconds, args.warmup)
            batched = scenario_file(work, args.seconds, args.warmup, args.read_batch_ms,
                                    "batched")
            for name in args.classes.split(","):
                user_class = "openai" if name == "openai" else "harness"
                scenario = batched if name == "harness-batched" else plain
                levels = [int(x) for x in (args.openai_levels if name == "openai"
                                           else args.levels).split(",")]
                runs = 1 if name == "openai" else args.runs
                results = [ladder(emulator.url, scenario, levels, user_class, work,
                                  args.seconds, args.warmup)[0] for _ in range(runs)]
                best[name] = min(results)
                if runs > 1:
                    print(f"{name}: sustained per run {results}", flush=True)
            if args.guidellm:
                for users in [int(x) for x in args.guidellm_streams.split(",")]:
                    print(f"guidellm streams={users}: "
                          f"{guidellm(emulator.url, args.guidellm_bin, users, args.seconds, work)}",
                          flush=True)
    print("max sustained users at 20 tok/s with |TTFT error| p95 <= 5 ms (one worker process,"
          " every run):")
    for name, users in best.items():
        print(f"  {name}: {users}")
    for name in (n for n in best if n != "openai"):
        if best.get("openai"):
            print(f"ratio {name}/openai: {best[name] / best['openai']:.2f}x")
        elif "openai" in best:
            print(f"ratio {name}/openai: the openai SDK user sustained none of the levels")


if __name__ == "__main__":
    main()
