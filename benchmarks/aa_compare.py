"""A/A and injected-slowdown study of ``pyagentbench compare``'s default timing gate, on this
project's own benchmark suite, beside pytest-benchmark's ``--benchmark-compare-fail=median:10%``.

    nice -n 10 python benchmarks/aa_compare.py --pairs 20            # collect and analyse
    python benchmarks/aa_compare.py --pairs 20 --analyze-only        # the tables from saved runs
    nice -n 10 python benchmarks/aa_compare.py --pairs 2 -- --benchmark-max-time=0.25

Runs ``r0, r1, ...`` of ``python -m pytest benchmarks --benchmark-only`` are made one after the
other (saved with ``--benchmark-save-data``, so plain ``benchmark`` tests keep their rounds too):

- odd runs are *slowed*: ``PYAGENTBENCH_AA_SLOWDOWN=0.2`` makes each call of
  ``test_taskqueue_put_get`` spin for 20% of its own time (benchmarks/test_runtime_bench.py); even
  runs are the code as it is;
- runs 4-7, 12-15, 20-23, ... have a CPU-bound process pinned to the other core.

A/A pairs are ``(r_i, r_i+2)``: the same code (both plain or both slowed), separate runs; a
quarter of them with the CPU hog in both runs, half with it in one run only, a quarter in neither.
Every benchmark flagged is a false alarm. Slowdown pairs are ``(r_2j, r_2j+1)`` and
``(r_2j, r_2j+3)``: the slowed benchmark must be flagged and nothing else. ``--pairs N`` makes
N + 2 runs (N A/A pairs, about N slowdown pairs).

Both gates see the same pairs of files: ours is ``compare``'s default (docs/compare.md), and
pytest-benchmark's is its own check class applied to the saved statistics exactly as
``--benchmark-compare-fail=median:10%`` applies it. Runs already saved are reused, so an
interrupted study resumes where it stopped; the tables are printed after every run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SLOWED = "test_taskqueue_put_get"
SLOWDOWN_ENV = "PYAGENTBENCH_AA_SLOWDOWN"
PYTEST_BENCHMARK_GATE = "median:10%"


def run_file(out: Path, index: int) -> Path | None:
    found = sorted(out.glob(f"*/[0-9][0-9][0-9][0-9]_aa{index:02d}_*.json"))
    return found[-1] if found else None


def slowed(index: int) -> bool:
    return index % 2 == 1


def hog_on(index: int) -> bool:
    return (index // 4) % 2 == 1


def start_hog() -> subprocess.Popen:
    """A CPU-bound process on the last core (the suite itself is not pinned)."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        try:
            os.sched_setaffinity(hog.pid, {(os.cpu_count() or 2) - 1})
        except OSError:
            pass
    return hog


def collect(out: Path, index: int, slowdown: float, extra: list[str]) -> Path:
    env = dict(os.environ)
    env.pop(SLOWDOWN_ENV, None)
    kind = "slow" if slowed(index) else "plain"
    if slowed(index):
        env[SLOWDOWN_ENV] = str(slowdown)
    command = [sys.executable, "-m", "pytest", str(HERE), "--benchmark-only", "-q", "-p", "no:cacheprovider",
               f"--benchmark-storage=file://{out}", f"--benchmark-save=aa{index:02d}_{kind}",
               "--benchmark-save-data", *extra]
    hog = start_hog() if hog_on(index) else None
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    path = run_file(out, index)
    if path is None:
        sys.stderr.write(done.stdout[-3000:])
        raise SystemExit(f"run {index}: pytest exited {done.returncode} and saved no run")
    print(f"# run {index:2d} {kind:5s} hog={'on ' if hog else 'off'} {time.monotonic() - started:5.0f}s "
          f"pytest exit {done.returncode} -> {path.name}", flush=True)
    return path


def pytest_benchmark_flags(base: Any, now: Any) -> list[str]:
    """Tests pytest-benchmark's --benchmark-compare-fail=median:10% fails, on these two runs."""
    from pytest_benchmark.utils import parse_compare_fail

    check = parse_compare_fail(PYTEST_BENCHMARK_GATE)
    return [test for test, bench in now.benchmarks.items()
            if test in base.benchmarks and check.fails(bench.stats, base.benchmarks[test].stats)]


def our_flags(base: Any, now: Any) -> tuple[list[str], float]:
    """Tests our default gate (compare's, at its default alpha) fails on these two runs, and the
    run-to-run noise of p50 compare saw between them (percent)."""
    from pyagentbench.results.compare import DEFAULT_FAIL, compare_runs, parse_gates

    gates = parse_gates(DEFAULT_FAIL)
    comparison = compare_runs(base, now, gates=gates, metrics=[g.metric.name for g in gates])
    return sorted({f.test for f in comparison.failures}), comparison.run_noise.get("p50", 0.0)


def short(test: str) -> str:
    return test.rsplit("::", 1)[-1]


_RUNS: dict[Path, Any] = {}


def load(path: Path) -> Any:
    from pyagentbench.results.compare import load_run

    if path not in _RUNS:
        _RUNS[path] = load_run(path)
    return _RUNS[path]


def hog_text(a: int, b: int) -> str:
    return {(False, False): "-", (True, True): "both", (False, True): "now", (True, False): "base"}[
        (hog_on(a), hog_on(b))]


def analyze(out: Path, pairs: int) -> None:
    runs = {}
    for index in range(pairs + 2):
        path = run_file(out, index)
        if path is not None:
            runs[index] = path
    aa_rows, slow_rows = [], []
    for i in range(pairs):
        if i in runs and i + 2 in runs:
            base, now = load(runs[i]), load(runs[i + 2])
            ours, noise = our_flags(base, now)
            aa_rows.append((f"r{i}-r{i + 2}", hog_text(i, i + 2), ours,
                            pytest_benchmark_flags(base, now), len(now.benchmarks), noise))
    for i in range(0, pairs + 2, 2):
        for j in (i + 1, i + 3):
            if i in runs and j in runs:
                base, now = load(runs[i]), load(runs[j])
                ours, noise = our_flags(base, now)
                slow_rows.append((f"r{i}-r{j}", hog_text(i, j), ours,
                                  pytest_benchmark_flags(base, now), len(now.benchmarks), noise))
    print()
    print("A/A: the same code in two separate runs; every flagged benchmark is a false alarm "
          "(hog: which run had a CPU-bound process on the other core; noise: the run-to-run noise "
          "of p50 compare measured between the two runs, one standard deviation)")
    print(f"{'pair':>8}  {'hog':4}  {'noise':>6}  {'ours':>4}  {'pytest-benchmark median:10%':>27}  ours flagged")
    for pair, hog, ours, theirs, total, noise in aa_rows:
        print(f"{pair:>8}  {hog:4}  {noise:5.1f}%  {len(ours):4d}  {len(theirs):24d}/{total:<2d}  "
              f"{', '.join(short(t) for t in ours) or '-'}")
    if aa_rows:
        print(f"false alarms (pairs with any flagged benchmark): ours {sum(1 for r in aa_rows if r[2])} "
              f"of {len(aa_rows)}, pytest-benchmark {sum(1 for r in aa_rows if r[3])} of {len(aa_rows)}; "
              f"flagged benchmarks in all: ours {sum(len(r[2]) for r in aa_rows)}, "
              f"pytest-benchmark {sum(len(r[3]) for r in aa_rows)}")
    print()
    print(f"Slowdown: {SLOWED} 20% slower in the second run; it must be flagged, and nothing else")
    print(f"{'pair':>8}  {'hog':4}  {'noise':>6}  {'ours: found':11}  {'others':>6}  "
          f"{'pytest-benchmark: found':23}  {'others':>6}")
    for pair, hog, ours, theirs, _, noise in slow_rows:
        found = [any(short(t) == SLOWED for t in flagged) for flagged in (ours, theirs)]
        others = [sum(1 for t in flagged if short(t) != SLOWED) for flagged in (ours, theirs)]
        print(f"{pair:>8}  {hog:4}  {noise:5.1f}%  {'yes' if found[0] else 'NO':11}  {others[0]:6d}  "
              f"{'yes' if found[1] else 'NO':23}  {others[1]:6d}")
    if slow_rows:
        def count(index: int) -> tuple[int, int]:
            found = sum(1 for r in slow_rows if any(short(t) == SLOWED for t in r[index]))
            clean = sum(1 for r in slow_rows if all(short(t) == SLOWED for t in r[index]))
            return found, clean

        (of, oc), (tf, tc) = count(2), count(3)
        n = len(slow_rows)
        print(f"detected: ours {of} of {n} (no other flagged in {oc} of {n}); "
              f"pytest-benchmark {tf} of {n} (no other flagged in {tc} of {n})")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=20, help="A/A pairs (N + 2 runs); default 20")
    parser.add_argument("--out", type=Path, default=ROOT / ".aa-compare", help="where runs are saved")
    parser.add_argument("--slowdown", type=float, default=0.2, help="the injected slowdown (0.2 = 20%%)")
    parser.add_argument("--analyze-only", action="store_true", help="print the tables from saved runs")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.analyze_only:
        for index in range(args.pairs + 2):
            if run_file(out, index) is None:
                collect(out, index, args.slowdown, args.pytest_args)
                if index >= 1:
                    try:
                        analyze(out, args.pairs)
                    except Exception:  # keep collecting; --analyze-only redoes the tables
                        traceback.print_exc()
    analyze(out, args.pairs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
