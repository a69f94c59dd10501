"""A wheel install, outside any checkout: the suites, fixtures and locustfile ship inside it, so
``harness evaluate`` and ``locust -f`` work from an empty directory.

One wheel build per run (``pip wheel --no-deps``, some seconds), installed
with ``--target`` and put first on ``PYTHONPATH`` so its copy shadows this checkout's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wheels = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
         "-w", str(wheels), str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    [wheel] = wheels.glob("lmstudio_harness-*.whl")
    target = tmp_path_factory.mktemp("site")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    return target


def run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("LMSTUDIO_API_TOKEN", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=240)


def test_wheel_carries_suites_fixtures_and_locustfile(installed: Path, tmp_path: Path) -> None:
    found = run(installed, tmp_path, "-c", "import harness, harness.evaluate.bundled as b; "
                "print(harness.__file__); print(b.suites_dir()); print(b.fixtures_dir()); "
                "print(b.locustfile())")
    assert found.returncode == 0, found.stderr
    lines = found.stdout.split()
    assert all(line.startswith(str(installed)) for line in lines), lines
    suites, fixtures = Path(lines[1]), Path(lines[2])
    assert (suites / "test_streaming.py").is_file() and (fixtures / "mcp" / "notes.py").is_file()
    assert (fixtures / "load" / "smoke.toml").is_file()
    assert (installed / "harness" / "reporting" / "templates" / "load" / "report.md.j2").is_file()


def test_evaluate_runs_from_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    fast = "test_error_tree_aligns_with_python_exceptions or test_hit_within_ttl_and_refresh"
    proc = run(installed, tmp_path, "-m", "harness.cli", "evaluate", "-k", fast,
               "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    status = {g["marker"]: g["status"] for g in data["gaps"]}
    assert status["errors"] == "PASS" and status["cache"] == "PASS", status


def test_locust_loads_the_bundled_locustfile(installed: Path, tmp_path: Path) -> None:
    path = run(installed, tmp_path, "-m", "harness.evaluate.bundled", "locustfile")
    assert path.returncode == 0 and path.stdout.strip().startswith(str(installed)), path
    proc = run(installed, tmp_path, "-m", "locust", "-f", path.stdout.strip(), "--list")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LLMUser" in proc.stdout, proc.stdout + proc.stderr
