"""Runs the README's load recipe N times, each on a fresh emulator, and counts valid runs.

    .venv/bin/python benchmarks/recipe_validity.py [--runs 10] [--workers 2]
        [--scenario fixtures/load/concurrency_sweep.toml] [--keep DIR]

Each run is ``harness load --scenario S --emulator --workers W`` exactly as the README gives it.
Prints one line per run (verdict, the gates that failed, TTFT error vs truth, load average) and
the count of runs whose validity gates all passed. The machine's load average is printed with
each run: a valid run on an idle machine and an invalid one on a saturated machine are both the
gates doing their job.
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

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scenario", default="fixtures/load/concurrency_sweep.toml")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep every run's outputs in DIR/run-<n> (to read a failed gate)")
    args = parser.parse_args()
    valid = 0
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(1, args.runs + 1):
            out = (args.keep or Path(tmp)) / f"run-{run}"
            load_before = os.getloadavg()[0]
            started = time.time()
            done = subprocess.run(
                [sys.executable, "-m", "harness.cli", "load", "--scenario", args.scenario,
                 "--emulator", "--workers", str(args.workers), "--out", str(out)],
                cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
            took = time.time() - started
            try:
                summary = json.loads((out / "summary.json").read_text())
            except OSError:
                print(f"run {run}: exit {done.returncode}, no summary: {done.stdout[-400:]}")
                continue
            failed = [g["name"] for g in summary["gates"] if not g["passed"]]
            truth = (summary.get("truth") or {}).get("ttft_abs_error_ms") or {}
            valid += bool(summary["valid"])
            p95 = truth.get("p95")
            print(f"run {run}: exit {done.returncode} {summary['verdict']:8s} "
                  f"valid={summary['valid']} failed gates={failed or '-'} "
                  f"|TTFT err| p95={'-' if p95 is None else f'{p95:.2f}'} ms "
                  f"requests={summary['records_total']} took {took:.0f}s "
                  f"loadavg {load_before:.1f}->{os.getloadavg()[0]:.1f}", flush=True)
            for gate in summary["gates"]:
                if not gate["passed"]:
                    print(f"    {gate['name']}: {gate['detail']}", flush=True)
    print(f"valid runs: {valid}/{args.runs}")


if __name__ == "__main__":
    main()
