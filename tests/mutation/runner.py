"""Measure the detection power of the suites and of the unit tests with mutmut, per module.

Run by ``tox -e mutation`` (never by the default test run), or directly::

    python -m tests.mutation.runner harness/client/sse.py harness/client/retry.py \
        --against suites --against tests --sample 80

Why a runner around mutmut instead of a bare ``mutmut run``: the issue asks for the suites and
the unit tests *separately*, per module, on a shared 2-core machine. mutmut reads one
``[tool.mutmut]`` section from ``pyproject.toml`` in its working directory and writes its
``mutants/`` tree there, so each test set gets its own scratch copy of the repository (under
``--workdir``) with that section rewritten; the checkout is never touched. Mutants are generated
once per test set, and mutmut's stats (which test reaches which function) are computed once;
modules then run one after the other (``--max-children 1`` under ``nice -n 19``).

``--sample N`` picks N mutants per module deterministically: the names sorted by their SHA-256,
so the same code always gives the same sample and adding a mutant elsewhere moves no other one.
Survivors judged equivalent are listed in ``tests/mutation/equivalent.toml`` with the reason and
leave the denominator. A summary per module and test set goes to ``--out`` as JSON and Markdown.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EQUIVALENT_FILE = Path(__file__).with_name("equivalent.toml")
# "tests" are the unit tests of the packages mutated here (client, review, agent) and the
# stress/symmetry tests; the rest of tests/ (load, studio, evaluate, CLI) is left out: the load
# runs take minutes and their validity gates (rightly) fail on a machine this busy. A directory
# the measured checkout does not have (an older commit) is skipped.
TEST_SETS: dict[str, list[str]] = {
    "suites": ["suites"],
    "tests": ["tests/client", "tests/review", "tests/agent", "tests/mutation"],
}
PYTEST_ARGS = ["-p", "no:cacheprovider", "-p", "tests.mutation.hypothesis_profile", "-q",
               "--timeout=120"]
# Killed: a test failed (or timed out: the mutant hangs the code it changed).
KILLED = {"killed", "timeout"}


@dataclass
class ModuleScore:
    """One module under one test set: what was run and what it killed."""

    module: str
    against: str
    generated: int
    sampled: int
    statuses: dict[str, int] = field(default_factory=dict)
    survivors: list[str] = field(default_factory=list)
    equivalent: list[str] = field(default_factory=list)

    @property
    def killed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status in KILLED)

    @property
    def score(self) -> float | None:
        """Killed over the non-equivalent mutants run (no test reaching a mutant counts as a
        survivor: nothing would catch that bug)."""
        counted = self.sampled - len(self.equivalent) - self.statuses.get("skipped", 0)
        return None if counted <= 0 else self.killed / counted


def module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def mutant_names(path: Path, module: str) -> list[str]:
    """Every mutant mutmut generates for the file (mutmut's own generator, no test run)."""
    from mutmut.mutation.file_mutation import mutate_file_contents

    mutated = mutate_file_contents(str(path), path.read_text("utf-8"))
    return [f"{module}.{name}" for name in mutated.mutant_names]


def sample(names: Sequence[str], size: int | None) -> list[str]:
    """A deterministic sample: names ordered by SHA-256 (stable when other code changes)."""
    if size is None or size >= len(names):
        return sorted(names)
    ranked = sorted(names, key=lambda n: hashlib.sha256(n.encode("utf-8")).hexdigest())
    return sorted(ranked[:size])


def load_equivalent() -> dict[str, str]:
    if not EQUIVALENT_FILE.exists():
        return {}
    data = tomllib.loads(EQUIVALENT_FILE.read_text("utf-8"))
    return {name: str(entry["reason"]) for name, entry in data.get("mutant", {}).items()}


def mutmut_section(modules: Sequence[str], tests: Sequence[str], extra: Sequence[str]) -> str:
    return "\n".join([
        "[tool.mutmut]",
        'source_paths = ["harness"]',
        f"only_mutate = {json.dumps(list(modules))}",
        'also_copy = ["suites", "fixtures", "benchmarks", "reports"]',
        f"pytest_add_cli_args = {json.dumps([*PYTEST_ARGS, *extra])}",
        f"pytest_add_cli_args_test_selection = {json.dumps(list(tests))}",
        "",
    ])


def prepare(workdir: Path, modules: Sequence[str], tests: Sequence[str], source: Path,
            extra: Sequence[str]) -> None:
    """A scratch copy of ``source``'s files (tracked and new) with our mutmut section."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=source,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        path = source / rel
        if path.is_file():
            target = workdir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    # The runner's own pytest plugin, also into a checkout that predates it (a "before" score).
    plugin = workdir / "tests" / "mutation" / "hypothesis_profile.py"
    plugin.parent.mkdir(parents=True, exist_ok=True)
    (plugin.parent / "__init__.py").touch()
    shutil.copy2(Path(__file__).with_name("hypothesis_profile.py"), plugin)
    pyproject = workdir / "pyproject.toml"
    text = re.sub(r"\n\[tool\.mutmut\]\n(?:(?!\n\[).)*", "\n", pyproject.read_text("utf-8"),
                  flags=re.S)
    pyproject.write_text(text.rstrip() + "\n\n" + mutmut_section(modules, tests, extra),
                         "utf-8")


def mutmut(workdir: Path, args: Sequence[str], log: Path) -> int:
    command = ["nice", "-n", "19", sys.executable, "-m", "mutmut", *args]
    env = {**os.environ, "PYTHONHASHSEED": "0", "NO_COLOR": "1"}
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(command[:6])} ... ({len(args)} args)\n")
        out.flush()
        return subprocess.run(command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                              check=False).returncode


def statuses_of(workdir: Path, module_path: str, names: Sequence[str]) -> dict[str, str]:
    from mutmut.stats import status_by_exit_code

    meta = workdir / "mutants" / (module_path + ".meta")
    codes = json.loads(meta.read_text("utf-8"))["exit_code_by_key"] if meta.exists() else {}
    return {name: str(status_by_exit_code[codes.get(name)]) for name in names}


def diff_of(workdir: Path, name: str) -> str:
    shown = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=workdir,
                           capture_output=True, text=True, check=False)
    return shown.stdout.strip()


def run_set(against: str, modules: Sequence[str], size: int | None, workdir: Path,
            out: Path, source: Path, extra: Sequence[str]) -> list[ModuleScore]:
    tests = [t for t in TEST_SETS[against] if (source / t).exists()]
    prepare(workdir, [m.partition(":")[0] for m in modules], tests, source, extra)
    log = out / f"mutmut-{against}.log"
    equivalent = load_equivalent()
    scores = []
    for spec in modules:
        module_path, _, own_size = spec.partition(":")  # "path.py:12": this module's sample
        module = module_name(module_path)
        every = mutant_names(workdir / module_path, module)
        chosen = sample(every, int(own_size) if own_size else size)
        mutmut(workdir, ["run", "--max-children", "1", *chosen], log)
        statuses = statuses_of(workdir, module_path, chosen)
        if all(status == "not checked" for status in statuses.values()):
            # Usually a clean (unmutated) test failed, which mutmut refuses: say so, go on.
            print(f"mutmut ran no mutant of {module_path} against {against} (a clean test "
                  f"run failed?); see {log}", flush=True)
            continue
        score = ModuleScore(module_path, against, len(every), len(chosen))
        for name, status in statuses.items():
            score.statuses[status] = score.statuses.get(status, 0) + 1
            if status not in KILLED:
                if name in equivalent:
                    score.equivalent.append(name)
                else:
                    score.survivors.append(name)
        scores.append(score)
        slug = module.replace(".", "-")
        with (out / f"survivors-{against}-{slug}.md").open("w", encoding="utf-8") as notes:
            for name in score.survivors:
                notes.write(f"## {name} ({statuses[name]})\n\n```diff\n{diff_of(workdir, name)}"
                            "\n```\n\n")
        save(out / "scores.json", score)
        print(summary_line(score), flush=True)
    return scores


def save(store: Path, score: ModuleScore) -> None:
    """Merge one module's score into ``store`` (other modules' and runs' entries are kept)."""
    kept = json.loads(store.read_text("utf-8")) if store.exists() else []
    fresh = {**asdict(score), "killed": score.killed, "score": score.score}
    merged = [s for s in kept if (s["module"], s["against"]) != (score.module, score.against)]
    store.write_text(json.dumps([*merged, fresh], indent=2) + "\n", "utf-8")


def summary_line(score: ModuleScore) -> str:
    pct = "n/a" if score.score is None else f"{score.score * 100:.1f} %"
    return (f"{score.module:32} {score.against:7} {pct:>8}  killed {score.killed}/"
            f"{score.sampled - len(score.equivalent)} (sample {score.sampled} of "
            f"{score.generated}; equivalent {len(score.equivalent)}; "
            f"{dict(sorted(score.statuses.items()))})")


def pct(killed: int, counted: int) -> str:
    return "n/a" if counted <= 0 else f"{killed * 100 / counted:.0f} % ({killed}/{counted})"


def table(scores: Sequence[dict[str, object]]) -> str:
    """Markdown: per module, the suites alone, the tests alone and both together (a mutant
    killed by either set; the sample is the same for both, being chosen by name)."""
    by_module: dict[str, dict[str, dict[str, object]]] = {}
    for entry in scores:
        by_module.setdefault(str(entry["module"]), {})[str(entry["against"])] = entry
    lines = ["| module | mutants (sampled) | suites | tests | suites + tests |",
             "|---|---|---|---|---|"]
    for module, sets in by_module.items():
        cells = []
        survivors: set[str] | None = None
        equivalent: set[str] = set()
        sampled = generated = 0
        for against in ("suites", "tests"):
            entry = sets.get(against)
            if entry is None:
                cells.append("not run")
                continue
            sampled, generated = int(entry["sampled"]), int(entry["generated"])  # type: ignore[call-overload]
            lost = set(entry["survivors"])  # type: ignore[call-overload]
            equivalent |= set(entry["equivalent"])  # type: ignore[call-overload]
            counted = sampled - len(set(entry["equivalent"]))  # type: ignore[call-overload]
            cells.append(pct(counted - len(lost), counted))
            survivors = lost if survivors is None else survivors & lost
        counted = sampled - len(equivalent)
        both = "n/a" if survivors is None else pct(counted - len(survivors), counted)
        lines.append(f"| `{module}` | {generated} ({sampled}) | {cells[0]} | {cells[1]} | {both} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*",
                        help="files to mutate, e.g. harness/client/sse.py (or sse.py:12 for a "
                             "sample of 12 from that module)")
    parser.add_argument("--table", type=Path, metavar="SCORES_JSON",
                        help="print the Markdown table of a scores.json and exit")
    parser.add_argument("--against", action="append", choices=sorted(TEST_SETS),
                        help="test set(s), each run separately (default: suites and tests)")
    parser.add_argument("--sample", type=int, default=None,
                        help="mutants per module, chosen deterministically (default: all)")
    parser.add_argument("--source", type=Path, default=REPO,
                        help="the git checkout to measure (default: this one), e.g. a worktree "
                             "of an older commit for a 'before' score")
    parser.add_argument("--pytest-arg", action="append", default=[],
                        help="one more pytest argument (e.g. -p no:base_url for old code)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/harness-mutation"))
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "out" / "mutation")
    args = parser.parse_args(argv)
    if args.table is not None:
        print(table(json.loads(args.table.read_text("utf-8"))))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    results: list[ModuleScore] = []
    for against in args.against or ["suites", "tests"]:
        (args.out / f"mutmut-{against}.log").unlink(missing_ok=True)
        results += run_set(against, args.modules, args.sample, args.workdir / against, args.out,
                           args.source, args.pytest_arg)
    print("\n".join(summary_line(s) for s in results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
