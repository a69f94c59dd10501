"""Measure the detection power of the suites and of the unit tests with mutmut, per module.

Run by ``tox -e mutation`` (never by the default test run), or directly::

    python -m tests.mutation.runner harness/client/sse.py harness/client/retry.py \
        --against suites --against tests --sample 80

Why a runner around mutmut instead of a bare ``mutmut run``: the issue asks for the suites and
the unit tests *separately*, per module, on a shared 2-core machine. mutmut reads one
``[tool.mutmut]`` section from ``pyproject.toml`` in its working directory and writes its
``mutants/`` tree there, so each test selection gets its own scratch copy of the repository
(under ``--workdir``) with that section rewritten; the checkout is never touched.

Which tests: the ``tests`` set is the unit tests of the mutated packages; the ``suites`` set is,
per package, the suite files that exercise it (``SUITES_FOR``): the client modules are driven by
every suite but the agent's, the agent modules by the agent suite, and no suite reaches
``harness/review``. mutmut refuses to run any mutant when one test of the selection fails
unmutated, so a suite file that cannot reach a module only adds ways to be refused.

``--sample N`` picks N mutants per module deterministically: the names sorted by their SHA-256,
so the same code always gives the same sample and adding a mutant elsewhere moves no other one.
``--on-survivors-of SET`` runs only the mutants of that sample that ``SET`` left alive (saved in
``--out``): together the two runs give the "suites + tests" score at a fraction of the cost.
``--resume`` keeps a scratch copy whose files are unchanged and skips the mutants it has already
judged. Survivors judged equivalent are listed in ``tests/mutation/equivalent.toml`` with the
reason and leave the denominator. A summary per module and test set goes to ``--out`` as JSON
and Markdown (``--table`` prints it, with a 95 % Wilson interval for sampled scores).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
EQUIVALENT_FILE = Path(__file__).with_name("equivalent.toml")
# "tests" are, per package, its unit tests and the killer tests of tests/mutation; the rest of
# tests/ (load, studio, evaluate, CLI) is left out: the load runs take minutes and their validity
# gates (rightly) fail on a machine this busy. tests/mutation/test_suites_catch.py is left out
# too: it runs a suite in a subprocess, which is the suites' power, not the unit tests'. A path
# the measured checkout does not have (an older commit) is skipped.
UNIT_TESTS_FOR: dict[str, list[str]] = {
    "harness/client/": ["tests/client", *(f"tests/mutation/test_{name}.py" for name in (
        "sse_killers", "retry_killers", "catalog_killers", "errors_killers", "protocol_killers",
        "stress"))],
    "harness/agent/": ["tests/agent", "tests/mutation/test_agent_killers.py"],
    "harness/review/": ["tests/review", "tests/mutation/test_review_killers.py"],
}
CLIENT_SUITES = [f"suites/test_{name}.py" for name in (
    "streaming", "call_layer", "concurrency", "errors", "model_switching", "backoff",
    "cache_expiry")]
SUITES_FOR: dict[str, list[str]] = {
    "harness/client/": CLIENT_SUITES,
    "harness/agent/": ["suites/test_agent.py"],
    "harness/review/": [],  # no suite imports harness.review
}
TEST_SETS = ("suites", "tests")
PYTEST_ARGS = ["-p", "no:cacheprovider", "-p", "no:xdist", "-p",
               "tests.mutation.hypothesis_profile", "-q", "--timeout=120"]
# Killed: a test failed (or timed out: the mutant hangs the code it changed).
KILLED = {"killed", "timeout"}


def selection(against: str, module_path: str) -> list[str]:
    """The test paths that judge ``module_path`` in test set ``against``."""
    by_package = UNIT_TESTS_FOR if against == "tests" else SUITES_FOR
    for prefix, paths in by_package.items():
        if module_path.startswith(prefix):
            return paths
    return ["tests"] if against == "tests" else ["suites"]


@dataclass
class ModuleScore:
    """One module under one test set: what was run and what it killed."""

    module: str
    against: str
    commit: str
    generated: int
    sample: int  # the module's sample (what the score is of)
    names: list[str] = field(default_factory=list)  # what this run ran (maybe a subset)
    subset_of: str | None = None  # ran only the survivors of this set's run
    statuses: dict[str, int] = field(default_factory=dict)
    killed_names: list[str] = field(default_factory=list)
    survivors: list[str] = field(default_factory=list)
    equivalent: list[str] = field(default_factory=list)

    @property
    def killed(self) -> int:
        return len(self.killed_names)

    @property
    def score(self) -> float | None:
        """Killed over the non-equivalent mutants run (no test reaching a mutant counts as a
        survivor: nothing would catch that bug)."""
        counted = len(self.names) - len(self.equivalent)
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


def wilson(killed: int, counted: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a sampled kill rate (no finite-population
    correction, so it is wider than the truth for samples that are a large share)."""
    if counted <= 0:
        return (0.0, 1.0)
    p = killed / counted
    centre = (p + z * z / (2 * counted)) / (1 + z * z / counted)
    half = z * math.sqrt(p * (1 - p) / counted + z * z / (4 * counted * counted)) / (
        1 + z * z / counted)
    return (max(0.0, centre - half), min(1.0, centre + half))


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


def source_files(source: Path) -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=source,
                            check=True, capture_output=True).stdout.decode().split("\0")
    return sorted(rel for rel in filter(None, listed) if (source / rel).is_file())


def digest(source: Path, files: Sequence[str], section: str) -> str:
    """What a scratch copy was made of: every file's content and the mutmut section."""
    h = hashlib.sha256(section.encode("utf-8"))
    for rel in files:
        h.update(rel.encode("utf-8") + b"\0" + (source / rel).read_bytes())
    return h.hexdigest()


def prepare(workdir: Path, modules: Sequence[str], tests: Sequence[str], source: Path,
            extra: Sequence[str], resume: bool) -> bool:
    """A scratch copy of ``source``'s files (tracked and new) with our mutmut section; with
    ``resume`` an existing copy made of the same files is kept (True: it was kept)."""
    section = mutmut_section(modules, tests, extra)
    files = source_files(source)
    made_of = digest(source, files, section)
    stamp = workdir / ".harness-mutation-digest"
    if resume and stamp.exists() and stamp.read_text("utf-8") == made_of:
        return True
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    for rel in files:
        target = workdir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / rel, target)
    # The runner's own pytest plugin, also into a checkout that predates it (a "before" score).
    plugin = workdir / "tests" / "mutation" / "hypothesis_profile.py"
    plugin.parent.mkdir(parents=True, exist_ok=True)
    (plugin.parent / "__init__.py").touch()
    shutil.copy2(Path(__file__).with_name("hypothesis_profile.py"), plugin)
    pyproject = workdir / "pyproject.toml"
    text = re.sub(r"\n\[tool\.mutmut\]\n(?:(?!\n\[).)*", "\n", pyproject.read_text("utf-8"),
                  flags=re.S)
    pyproject.write_text(text.rstrip() + "\n\n" + section, "utf-8")
    stamp.write_text(made_of, "utf-8")
    (workdir / ".harness-mutation-commit").write_text(commit_of(source), "utf-8")
    return False


def commit_of(source: Path) -> str:
    """The commit a scratch copy is made of ("+uncommitted" when tracked files differ)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=source, check=True,
                          capture_output=True, text=True).stdout.strip()
    changed = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=source,
                             check=False).returncode
    return head + ("+uncommitted" if changed else "")


def mutmut(workdir: Path, args: Sequence[str], log: Path, children: int) -> int:
    command = ["nice", "-n", "19", sys.executable, "-m", "mutmut", "run", "--max-children",
               str(children), *args]
    env = {**os.environ, "PYTHONHASHSEED": "0", "NO_COLOR": "1"}
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(command[:8])} ... ({len(args)} mutants)\n")
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


def load_scores(store: Path) -> list[dict[str, Any]]:
    return json.loads(store.read_text("utf-8")) if store.exists() else []


def run_module(against: str, module_path: str, size: int | None, workdir: Path, out: Path,
               source: Path, extra: Sequence[str], *, tests: Sequence[str],
               modules: Sequence[str], survivors_of: str | None, rerun: bool, resume: bool,
               same_run: bool, children: int) -> ModuleScore | None:
    module = module_name(module_path)
    every = mutant_names(source / module_path, module)
    chosen = sample(every, size)
    names = chosen
    earlier = {(s["module"], s["against"]): s for s in load_scores(out / "scores.json")}
    prior: dict[str, Any] = {"killed_names": [], "statuses": {}}
    for wanted in filter(None, (survivors_of, against if rerun else None)):
        base = earlier.get((module_path, wanted))
        if base is None or base["sample"] != len(chosen) or not set(base["names"]) <= set(chosen):
            print(f"{module_path}: no {wanted} run of this sample in {out}; run it first",
                  flush=True)
            return None
        if wanted == against:  # a re-run after new tests: its kills stand, survivors go again
            prior, survivors_of = base, base.get("subset_of")
            names = sorted(base["names"] if survivors_of is None else
                           earlier[(module_path, survivors_of)]["survivors"])
        else:
            names = sorted(base["survivors"])
    done = set(prior["killed_names"])
    log = out / f"mutmut-{against}.log"
    # One snapshot per invocation: a copy made earlier in this run is kept as it is.
    kept = True if same_run else prepare(workdir, modules, tests, source, extra, resume)
    commit = (workdir / ".harness-mutation-commit").read_text("utf-8")
    pending = [n for n in names if n not in done]
    todo = pending
    if kept:
        todo = [n for n, s in statuses_of(workdir, module_path, pending).items()
                if s == "not checked"]
    if todo:
        mutmut(workdir, todo, log, children)
    statuses = {**statuses_of(workdir, module_path, pending), **{n: "killed" for n in done}}
    if pending and all(statuses[n] == "not checked" for n in pending):
        # Usually a clean (unmutated) test failed, which mutmut refuses: say so, go on.
        print(f"mutmut ran no mutant of {module_path} against {against} (a clean test "
              f"run failed?); see {log}", flush=True)
        return None
    equivalent = load_equivalent()
    score = ModuleScore(module_path, against, commit, len(every),
                        len(chosen), names=names, subset_of=survivors_of)
    for name, status in sorted(statuses.items()):
        score.statuses[status] = score.statuses.get(status, 0) + 1
        if status in KILLED:
            score.killed_names.append(name)
        elif name in equivalent:
            score.equivalent.append(name)
        else:
            score.survivors.append(name)
    slug = module.replace(".", "-")
    with (out / f"survivors-{against}-{slug}.md").open("w", encoding="utf-8") as notes:
        for name in score.survivors:
            notes.write(f"## {name} ({statuses[name]})\n\n```diff\n{diff_of(workdir, name)}"
                        "\n```\n\n")
    save(out / "scores.json", score)
    print(summary_line(score), flush=True)
    return score


def save(store: Path, score: ModuleScore) -> None:
    """Merge one module's score into ``store`` (other modules' and runs' entries are kept)."""
    fresh = {**asdict(score), "killed": score.killed, "score": score.score}
    merged = [s for s in load_scores(store)
              if (s["module"], s["against"]) != (score.module, score.against)]
    store.write_text(json.dumps([*merged, fresh], indent=2) + "\n", "utf-8")


def summary_line(score: ModuleScore) -> str:
    pct = "n/a" if score.score is None else f"{score.score * 100:.1f} %"
    on = f"survivors of {score.subset_of}: {len(score.names)}" if score.subset_of else (
        f"sample {score.sample} of {score.generated}")
    return (f"{score.module:32} {score.against:7} {pct:>8}  killed {score.killed}/"
            f"{len(score.names) - len(score.equivalent)} ({on}; equivalent "
            f"{len(score.equivalent)}; {dict(sorted(score.statuses.items()))}; "
            f"at {score.commit})")


def cells(sample_names: set[str], killed: set[str], equivalent: set[str], generated: int
          ) -> str:
    """killed | survived | equivalent | score (with its 95 % interval when sampled)."""
    lost = sample_names - killed
    equiv = lost & equivalent
    counted = len(sample_names) - len(equiv)
    if counted <= 0:
        return "| | | | n/a "
    score = f"**{len(killed) * 100 / counted:.0f} %**"
    if len(sample_names) < generated:
        low, high = wilson(len(killed), counted)
        score += f" ({low * 100:.0f}-{high * 100:.0f})"
    return f"| {len(killed)} | {len(lost - equiv)} | {len(equiv)} | {score} "


def table(scores: Sequence[dict[str, Any]]) -> str:
    """Markdown: per module, (a) the suites alone and (b) suites + tests (a mutant killed by
    either set), each as killed / survived / equivalent / score, and the commit measured."""
    equivalent = set(load_equivalent())
    by_module: dict[str, dict[str, dict[str, Any]]] = {}
    for entry in scores:
        by_module.setdefault(str(entry["module"]), {})[str(entry["against"])] = entry
    lines = ["| module | commit | mutants (sample) | (a) suites: killed | survived | equivalent "
             "| score | (b) suites + tests: killed | survived | equivalent | score |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for module, sets in by_module.items():
        full = [e for e in sets.values() if not e.get("subset_of")]
        if not full:
            continue
        sample_names = set(full[0]["names"])
        generated = int(full[0]["generated"])
        commits = ", ".join(sorted({str(e["commit"]) for e in sets.values()}))
        suites = sets.get("suites")
        if suites is not None and not suites.get("subset_of"):
            alone = cells(sample_names, set(suites["killed_names"]), equivalent, generated)
        else:
            alone = "| not run | | | "
        killed: set[str] = set().union(*(set(e["killed_names"]) for e in sets.values()))
        both = cells(sample_names, killed, equivalent, generated)
        lines.append(f"| `{module}` | {commits} | {generated} ({len(sample_names)}) {alone}"
                     f"{both}|")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*",
                        help="files to mutate, e.g. harness/client/sse.py (or sse.py:12 for a "
                             "sample of 12 from that module)")
    parser.add_argument("--table", type=Path, metavar="SCORES_JSON",
                        help="print the Markdown table of a scores.json and exit")
    parser.add_argument("--against", action="append", choices=TEST_SETS,
                        help="test set(s), each run separately (default: suites and tests)")
    parser.add_argument("--sample", type=int, default=None,
                        help="mutants per module, chosen deterministically (default: all)")
    parser.add_argument("--on-survivors-of", choices=TEST_SETS, default=None,
                        help="run only the sample's survivors of this set's earlier run")
    parser.add_argument("--rerun-survivors", action="store_true",
                        help="after adding tests: run only what this set's last run of the same "
                             "sample left alive (its kills stand)")
    parser.add_argument("--resume", action="store_true",
                        help="keep an unchanged scratch copy and the mutants it already judged")
    parser.add_argument("--max-children", type=int, default=1,
                        help="mutmut workers (at most 2 on a shared 2-core machine)")
    parser.add_argument("--source", type=Path, default=REPO,
                        help="the git checkout to measure (default: this one), e.g. a worktree "
                             "of an older commit for a 'before' score")
    parser.add_argument("--pytest-arg", action="append", default=[],
                        help="one more pytest argument (e.g. -p no:base_url for old code)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/harness-mutation"))
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "out" / "mutation")
    args = parser.parse_args(argv)
    if args.table is not None:
        print(table(load_scores(args.table)))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    specs = [spec.partition(":") for spec in args.modules]  # "path.py:12": its own sample
    results: list[ModuleScore] = []
    prepared: set[Path] = set()
    for against in args.against or list(TEST_SETS):
        groups: dict[tuple[str, ...], list[str]] = {}
        for path, _, _ in specs:
            groups.setdefault(tuple(selection(against, path)), []).append(path)
        for path, _, own_size in specs:
            tests = tuple(selection(against, path))
            present = [t for t in tests if (args.source / t).exists()]
            if not present:
                print(f"{path}: no {against} test reaches it ({', '.join(tests) or 'none'})",
                      flush=True)
                continue
            # A copy per test selection and set of mutated modules: two runs at once (one per
            # worker) never share one, and a later run of the same modules can --resume it.
            slug = hashlib.sha256("\0".join([*tests, "", *groups[tests]]).encode()).hexdigest()
            workdir = args.workdir / f"{against}-{slug[:8]}"
            # One scratch copy (and one stats run) per test selection and invocation.
            score = run_module(
                against, path, int(own_size) if own_size else args.sample, workdir, args.out,
                args.source, args.pytest_arg, tests=present, modules=groups[tests],
                survivors_of=args.on_survivors_of, rerun=args.rerun_survivors,
                resume=args.resume, same_run=workdir in prepared, children=args.max_children)
            prepared.add(workdir)
            if score is not None:
                results.append(score)
    print("\n".join(summary_line(s) for s in results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
