#!/usr/bin/env bash
# Runs the native test subset under valgrind memcheck and fails if memcheck reports, in our code
# (csrc/, the extension pyagentbench._native), a block definitely lost or any memory error.
#
#   tools/valgrind-native.sh                  # tests/runtime and tests/instruments
#   tools/valgrind-native.sh tests/runtime/test_taskqueue.py -k stats   # any pytest arguments
#
# Environment: PYTHON (default: python, the virtualenv the package is installed in, editable or
# not); VALGRIND_LOG_DIR (default: a new temporary directory), where memcheck writes one log per
# process (memcheck.<pid>.log).
#
# How it runs, and why:
# - PYTHONMALLOC=malloc: every Python allocation goes through malloc, where memcheck sees it
#   (pymalloc's arenas would hide objects, and read memory memcheck believes uninitialised).
# - PYAGENTBENCH_SANITIZER=1 skips the tests marked no_sanitizer (tests/conftest.py): RSS flatness
#   over a million operations, address space per object, children started without the
#   instrumentation. Under valgrind those measure valgrind, as they measure ASan under the
#   sanitizer stage, and the million operations would take hours.
# - --leak-check=full --show-leak-kinds=definite: the loss records of definitely lost blocks, with
#   the stack that allocated them. "Possibly lost" is the interpreter's normal state at exit: a
#   Python object allocated with a GC header is pointed to past its start; "still reachable" is
#   what the interpreter keeps until exit on purpose.
# - --fullpath-after= prints full source paths, so that a frame in our code reads ".../csrc/x.c".
# - No suppressions file. The interpreter's own reports (CPython 3.11 has a few "uninitialised
#   value" reports in small-int handling under memcheck, and glibc's AVX2 string functions read
#   whole vectors past a string's end) differ between CPython builds and versions, so a
#   suppressions file would need one list per build. Instead the verdict reads only the reports
#   whose stack passes through our code: a leak or error there is ours, whatever called it; the
#   rest are counted and left to the log. AllocCounter's allocator hooks (csrc/allocs.c) are not
#   "our code" for this: every allocation made while a counter is installed passes through them
#   to the allocator beneath, so a block the interpreter loses then (tracemalloc's tracebacks,
#   when tracemalloc runs beneath a counter) shows their frame without being theirs.
# - Test failures do not decide the verdict: under valgrind everything runs 20 to 50 times slower
#   and threads take turns, so a test that bounds a duration may fail. pytest's exit status is
#   printed beside memcheck's verdict.
#
# Time (CPython 3.11, a loaded 2-core machine): tests/runtime 4.5 minutes of CPU (17 minutes of
# wall time), tests/instruments 3.5 minutes of CPU (5.5 of wall time, 15 of its timing tests
# failing under the slowdown); tests/runtime/test_histogram.py alone about 2 minutes of CPU.
set -u
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
logs=${VALGRIND_LOG_DIR:-$(mktemp -d -t valgrind-native.XXXXXX)}
mkdir -p "$logs"
if [ "$#" -eq 0 ]; then
    set -- tests/runtime tests/instruments
fi
command -v valgrind >/dev/null || { echo "valgrind-native: valgrind is not installed" >&2; exit 2; }

echo "valgrind-native: memcheck logs in $logs"
start=$(date +%s)
PYTHONMALLOC=malloc PYAGENTBENCH_SANITIZER=1 valgrind --tool=memcheck --leak-check=full \
    --show-leak-kinds=definite --errors-for-leak-kinds=definite --num-callers=50 \
    --fullpath-after= --trace-children=no --log-file="$logs/memcheck.%p.log" \
    "$python" -m pytest -q -p no:cacheprovider -rs "$@"
tests_status=$?
echo "valgrind-native: pytest exit status $tests_status, $(( $(date +%s) - start )) s"

"$python" - "$logs" <<'EOF'
"""Reads memcheck's logs: every report whose stack passes through our code fails the run."""
import glob
import re
import sys

OURS = re.compile(r"/csrc/[a-z_]+\.[ch]:\d+|_native\.cpython")
# AllocCounter's allocator hooks (csrc/allocs.c) pass every allocation made while a counter is
# installed on to the allocator beneath: a frame of theirs says who was counting, not who
# allocated. A report counts as ours through any other frame of csrc/.
HOOK = re.compile(r"\b(raw|gil)_(malloc|calloc|realloc|free) \(\S*/csrc/allocs\.c:\d+\)")


def through_our_code(report: str) -> bool:
    return any(OURS.search(line) and not HOOK.search(line) for line in report.splitlines())


failed = 0
for path in sorted(glob.glob(f"{sys.argv[1]}/memcheck.*.log")):
    text = open(path, errors="replace").read()
    pid = re.search(r"==(\d+)==", text)
    command = re.search(r"Command: (.*)", text)
    # A report is a run of "==pid== " lines between blank ones.
    reports = re.split(r"\n==\d+== ?\n", text)
    ours = [r for r in reports if through_our_code(r) and re.search(r"(lost|Invalid|uninitialised|"
                                                                r"Mismatched|overlap|free)", r)]
    others = sum(1 for r in reports if re.search(r"\n==\d+==    (at|by) 0x", r)) - len(ours)
    hooked = sum(1 for r in reports if OURS.search(r) and not through_our_code(r))
    summary = re.search(r"LEAK SUMMARY:\n((?:==\d+==  .*\n)+)", text)
    if not summary and not ours and not others:
        continue  # a child between fork() and exec(): nothing to say
    print(f"process {pid.group(1) if pid else '?'}: {command.group(1) if command else ''}")
    if summary:
        for line in summary.group(1).splitlines():
            line = re.sub(r"^==\d+== ", "", line).strip()
            if line.split(":")[0] in ("definitely lost", "indirectly lost", "possibly lost",
                                      "still reachable", "suppressed"):
                print(f"    {line}")
    print(f"    reports through our code: {len(ours)}; other reports (the interpreter's, "
          f"glibc's): {others}, of which {hooked} only pass through AllocCounter's hooks")
    for report in ours:
        print(re.sub(r"(?m)^==\d+== ", "    | ", report.strip()))
    failed += len(ours)
print(f"valgrind-native: {'FAILED' if failed else 'ok'}: {failed} report(s) through csrc/")
sys.exit(1 if failed else 0)
EOF
