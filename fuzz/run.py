"""Run every fuzz target for a while, a few at a time, and report what each ran.

    python fuzz/run.py [--seconds 30] [--jobs 2] [--out DIR] [target ...]

Each target (fuzz/fuzz_*.py, all of them by default) runs for --seconds with a fresh corpus under
DIR, its output in DIR/<target>.log and any failing input in DIR/<target>-crash-* (or -timeout-*).
At the end a line per target gives its executions, corpus size and coverage from libFuzzer's
closing ``#N DONE cov: .. corp: X/Yb exec/s: ..`` line. The exit status is 1 if any target
failed: a crash, a hang (an input running past -timeout), an exception its code does not
document, or no DONE line at all; the end of a failed target's log is printed.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DONE = re.compile(r"^#(\d+)\s+DONE\s+(?:cov: (\d+) ft: \d+ )?corp: (\d+)/(\d+\w*) .*?exec/s: (\d+)", re.M)


def targets() -> list[str]:
    return sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(HERE, "fuzz_*.py")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default=None, help="logs, corpora and failing inputs (default: a temp dir)")
    parser.add_argument("targets", nargs="*", default=None)
    args = parser.parse_args()
    names = args.targets or targets()
    unknown = set(names) - set(targets())
    if unknown:
        parser.error(f"unknown target(s) {', '.join(sorted(unknown))}; known: {', '.join(targets())}")
    out = args.out or tempfile.mkdtemp(prefix="fuzz-run-")
    os.makedirs(out, exist_ok=True)
    print(f"fuzz: {len(names)} target(s), {args.seconds} s each, {args.jobs} at a time; output in {out}",
          flush=True)

    pending, running, results = list(names), {}, {}
    started = time.monotonic()
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            corpus = os.path.join(out, f"{name}-corpus")
            os.makedirs(corpus, exist_ok=True)
            log = open(os.path.join(out, f"{name}.log"), "w")
            command = [sys.executable, os.path.join(HERE, f"{name}.py"), f"-max_total_time={args.seconds}",
                       f"-artifact_prefix={os.path.join(out, name)}-", corpus]
            running[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log,
                             time.monotonic())
        time.sleep(0.2)
        for name, (process, log, began) in list(running.items()):
            if process.poll() is None:
                if time.monotonic() - began > args.seconds + 180:  # the whole target hung
                    process.kill()
                continue
            log.close()
            results[name] = (process.returncode, time.monotonic() - began)
            del running[name]

    failed = []
    print(f"\n{'target':<18} {'result':<8} {'executions':>10} {'corpus':>16} {'cov':>5} {'exec/s':>7} {'time':>6}")
    for name in names:
        returncode, took = results[name]
        text = open(os.path.join(out, f"{name}.log"), errors="replace").read()
        done = DONE.search(text)
        ok = returncode == 0 and done is not None
        if done:
            runs, cov, corp, size, rate = done.groups()
            row = f"{runs:>10} {corp + ' / ' + size:>16} {cov or '-':>5} {rate:>7}"
        else:
            row = f"{'-':>10} {'-':>16} {'-':>5} {'-':>7}"
        print(f"{name:<18} {'ok' if ok else 'FAILED':<8} {row} {took:5.0f}s")
        for line in re.findall(rf"^{name}: .*$", text, re.M):  # the target's own notes (the 50 MB case)
            print(f"  {line}")
        if not ok:
            failed.append((name, returncode, text))
    for name, returncode, text in failed:
        print(f"\n---- {name}: exit {returncode}, the end of {os.path.join(out, name + '.log')} ----")
        lines = [line for line in text.splitlines() if not re.match(r"^#\d+\s+(NEW|REDUCE|pulse)", line)]
        print("\n".join(lines[-60:]))
        for artifact in sorted(glob.glob(os.path.join(out, f"{name}-*-*"))):
            if not artifact.endswith("-corpus"):
                print(f"failing input: {artifact} (re-run: python fuzz/{name}.py {artifact})")
    print(f"\nfuzz: {len(names) - len(failed)} of {len(names)} target(s) passed in "
          f"{time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
