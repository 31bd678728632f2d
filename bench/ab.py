#!/usr/bin/env python3
"""Run one benchmark on two commits in the same invocation and put the figures side by side.

    python bench/ab.py OLD_REV bench/bench_worker.py [bench args...]
    python bench/ab.py --rounds 2 HEAD~5 bench/bench_audit.py --events 200000

Each commit's tree is checked out in a temporary git worktree; the benchmark
script and the runtime (files/galaxy/src, through PYTHONPATH) are that
commit's own, the Python environment is this checkout's. The two are run
alternately (old, new, old, new ...), so a machine that gets busier or
quieter during the run weighs on both alike.

The output of each run is printed whole. Then every line that reads the same
in both outputs once its numbers are taken out is printed once more with each
number as ``old -> new (new/old)``: the figures side by side, whatever the
benchmark prints.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def worktree(rev: str, root: Path) -> Path:
    path = root / rev.replace("/", "_")
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(path), rev], check=True)
    return path


def run(tree: Path, script: str, args: list[str]) -> str:
    env = dict(os.environ, PYTHONPATH=str(tree / "files" / "galaxy" / "src"))
    proc = subprocess.run([sys.executable, str(tree / script), *args], cwd=tree, env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{script} at {tree.name} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def shape(line: str) -> str:
    return NUMBER.sub("#", line.strip())


def side_by_side(old_runs: list[str], new_runs: list[str]) -> list[str]:
    """Lines of the same shape in every run, with the median of each number per side."""
    def table(runs: list[str]) -> dict[str, list[list[float]]]:
        found: dict[str, list[list[float]]] = {}
        for out in runs:
            seen: set[str] = set()
            for line in out.splitlines():
                key = shape(line)
                if "#" not in key or key in seen:
                    continue
                seen.add(key)
                found.setdefault(key, []).append([float(n) for n in NUMBER.findall(line)])
        return found

    old, new = table(old_runs), table(new_runs)
    rows = []
    for key, olds in old.items():
        news = new.get(key)
        if not news or len(olds) != len(old_runs) or len(news) != len(new_runs):
            continue
        parts = key.split("#")
        text = parts[0]
        for i, rest in enumerate(parts[1:]):
            a = statistics.median(r[i] for r in olds)
            b = statistics.median(r[i] for r in news)
            ratio = f" ({b / a:.2f}x)" if a and a != b else ""
            text += f"[{a:g} -> {b:g}{ratio}]" + rest
        rows.append(text)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=1, help="runs of each commit, alternating (default 1)")
    ap.add_argument("--new", default="HEAD", help="the commit to compare with OLD (default HEAD)")
    ap.add_argument("old", help="the commit to compare against")
    ap.add_argument("script", help="the benchmark, relative to the repository (e.g. bench/bench_worker.py)")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="galaxy-ab-") as tmp:
        trees = {}
        try:
            for label, rev in (("old", a.old), ("new", a.new)):
                trees[label] = worktree(rev, Path(tmp) / label)
            outs: dict[str, list[str]] = {"old": [], "new": []}
            for n in range(a.rounds):
                for label in ("old", "new"):
                    print(f"== {label} ({a.old if label == 'old' else a.new}), round {n + 1}: {a.script}", flush=True)
                    out = run(trees[label], a.script, a.args)
                    print(out, flush=True)
                    outs[label].append(out)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
    print(f"== side by side: [{a.old} -> {a.new} (new/old)], median of {a.rounds} run(s) each")
    for row in side_by_side(outs["old"], outs["new"]):
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
