"""Serial vs ``-n 2 --agentbench-xdist``: wall time, each benchmark's median, deterministic metrics.

    python benchmarks/xdist_scaling.py            # both parts
    python benchmarks/xdist_scaling.py --part own # this project's own benchmarks suite only
    python benchmarks/xdist_scaling.py --part slow --count 40

Part ``own`` runs this project's own suite (``pytest benchmarks --benchmark-only``) serially and
with ``-n 2 --agentbench-xdist``, and prints per benchmark the ratio of its median (xdist / serial)
and whether its allocations per call are the same. Part ``slow`` writes a suite of N benchmarks of
10-50 ms of CPU each into a temporary folder and prints the wall time of both runs. Run it on a
quiet machine: the timed runs are what is measured. It is a script, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SLOW_TEST = """
import time
import pytest

def spin(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass

@pytest.mark.parametrize("ms", {sizes})
def test_slow(benchmark, ms):
    benchmark.pedantic(spin, args=(ms / 1000,), rounds=5, iterations=1)
"""


def run(args: list[str], cwd: Path) -> float:
    """Run pytest with *args* in *cwd*; its wall time in seconds."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly",
                           "-p", "no:cacheprovider", *args], cwd=cwd, capture_output=True,
                          text=True)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"pytest {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
                 f"\n{proc.stderr[-2000:]}")
    return took


def load(path: Path) -> dict[str, dict]:
    return {b["fullname"]: b for b in json.loads(path.read_text())["benchmarks"]}


def own_suite(folder: Path) -> None:
    serial_json, xdist_json = folder / "serial.json", folder / "xdist.json"
    serial_s = run(["benchmarks", "--benchmark-only", f"--benchmark-json={serial_json}"], ROOT)
    xdist_s = run(["benchmarks", "--benchmark-only", "-n", "2", "--agentbench-xdist",
                   f"--benchmark-json={xdist_json}"], ROOT)
    serial, xdist = load(serial_json), load(xdist_json)
    print(f"\nThis project's benchmarks suite: serial {serial_s:.1f} s, -n 2 {xdist_s:.1f} s "
          f"({serial_s / xdist_s:.2f}x)")
    print(f"{'benchmark':60} {'serial median':>14} {'-n 2 median':>12} {'ratio':>6}  allocs/call")
    ratios = []
    for name in sorted(serial):
        if name not in xdist:
            print(f"{name[-60:]:60} missing from the xdist run")
            continue
        a, b = serial[name]["stats"]["median"], xdist[name]["stats"]["median"]
        ratios.append(b / a)
        allocs = [run_["extra_info"].get("agentbench", {}).get("allocs_per_call")
                  for run_ in (serial[name], xdist[name])]
        same = "-" if allocs[0] is None else ("same" if allocs[0] == allocs[1] else
                                              f"DIFFER {allocs[0]} vs {allocs[1]}")
        print(f"{name.split('::')[-1][-60:]:60} {a * 1e6:12.3f}us {b * 1e6:10.3f}us {b / a:6.2f}  {same}")
    print(f"median ratio {statistics.median(ratios):.3f}, min {min(ratios):.3f}, "
          f"max {max(ratios):.3f} over {len(ratios)} benchmarks")


def slow_suite(folder: Path, count: int) -> None:
    sizes = [10 + (40 * i) // max(count - 1, 1) for i in range(count)]  # 10 to 50 ms
    suite = folder / "slow"
    suite.mkdir()
    (suite / "test_slow.py").write_text(SLOW_TEST.format(sizes=sizes))
    serial_s = run(["--benchmark-only"], suite)
    xdist_s = run(["--benchmark-only", "-n", "2", "--agentbench-xdist"], suite)
    work = sum(sizes) * 5 / 1000
    print(f"\n{count} benchmarks of 10-50 ms (5 rounds each, {work:.1f} s of CPU in all): "
          f"serial {serial_s:.1f} s, -n 2 {xdist_s:.1f} s ({serial_s / xdist_s:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("own", "slow", "both"), default="both")
    parser.add_argument("--count", type=int, default=40, help="benchmarks in the slow suite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("own", "both"):
            own_suite(Path(tmp))
        if args.part in ("slow", "both"):
            slow_suite(Path(tmp), args.count)


if __name__ == "__main__":
    main()
