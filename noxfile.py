"""nox sessions: the test suite on every supported CPython, and under ASan+UBSan.

    nox                   the suite on each of CPython 3.9 to 3.13 that is installed; an absent one
                          is skipped with a line that says so
    nox -s tests-3.12     one of them
    nox -s sanitizer      the suite against an -fsanitize=address,undefined build of the extension
    nox -s fuzz-3.11      each atheris fuzz target in fuzz/ for 30 s, and the stateful tests for
                          10,000+ steps each (`nox -s fuzz-3.11 -- --seconds 600` fuzzes longer)

Each test session builds the extension with warnings as errors (PYAGENTBENCH_WERROR=1) and runs
`python -m pytest tests -n 2`; arguments after `--` go to pytest. nox finds an interpreter as
`python3.X` on PATH; .ci/run puts pyenv's versions there. Nothing is downloaded but packages from
the package index.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nox

nox.needs_version = ">=2025.5.1"  # nox.options.download_python

ROOT = Path(__file__).resolve().parent

#: Every CPython the package supports (pyproject.toml: requires-python = ">=3.9").
PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]

nox.options.sessions = ["tests"]
nox.options.envdir = ".venv-nox"  # .gitignore already ignores .venv*/
nox.options.download_python = "never"  # an interpreter that is not installed is skipped, not fetched
nox.options.error_on_missing_interpreters = False  # (nox turns this on where CI is set)

#: The sanitizer build: -O1 keeps the instrumented extension quick, frame pointers keep its stack
#: traces whole, and the first undefined behaviour ends the process instead of scrolling past.
SANITIZE = "-fsanitize=address,undefined"
SANITIZER_CFLAGS = f"{SANITIZE} -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite, the extension built with -Werror.

    Installed as README.md says (editable: each interpreter's extension lands in the tree beside the
    others, under its own ABI tag)."""
    session.env["PYAGENTBENCH_WERROR"] = "1"
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "tests", "-n", "2", *session.posargs)


def _sanitizer_runtime(session: nox.Session) -> str:
    """LD_PRELOAD for the ASan and UBSan runtimes of the compiler that builds the extension."""
    compiler = os.environ.get("CC", "gcc")
    libs = []
    for name in ("libasan.so", "libubsan.so"):
        path = subprocess.run([compiler, f"-print-file-name={name}"], capture_output=True, text=True,
                              check=True).stdout.strip()
        if not os.path.isabs(path):  # the compiler answers with the bare name when it has none
            session.error(f"{compiler} has no {name}: install its sanitizer runtimes (libasan, libubsan)")
        libs.append(path)
    return ":".join(libs)


@nox.session
def sanitizer(session: nox.Session) -> None:
    """The test suite against an ASan+UBSan build of the extension.

    The build is a copy of the source tree installed editable in this session's virtualenv (the
    working tree's own build is left alone). The suite runs with the runtimes preloaded and
    PYTHONMALLOC=malloc, so ASan sees every Python allocation; tests marked no_sanitizer are
    skipped (tests/conftest.py). A sanitizer report fails the session: ASan's from any process, and
    UBSan's by ending the process it happens in. .ci/run also fails the stage on any report in the
    output."""
    # Not session.create_tmp(): it points TMPDIR inside the repository, where the suites pytester
    # writes would find the repository's own pyproject.toml and run under its pytest settings.
    venv = Path(session.virtualenv.location)
    src, logs = venv / "src", venv / "sanitizer-logs"
    for path in (src, logs):
        shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv*", ".nox", "build", "dist", "*.egg-info", "*.so", "*.o", "__pycache__",
        ".pytest_cache", ".hypothesis", ".benchmarks", ".mypy_cache"))
    logs.mkdir()
    preload = _sanitizer_runtime(session)

    session.install("-e", f"{src}[test]", env={
        "CFLAGS": SANITIZER_CFLAGS, "LDFLAGS": SANITIZE, "PYAGENTBENCH_WERROR": "1"})

    session.chdir(src)
    env = {
        "LD_PRELOAD": preload,
        "PYTHONMALLOC": "malloc",
        # Leak detection off: the interpreter keeps much of what it allocates until exit, on purpose.
        # ASan's reports go to files, one per process, whoever captured its stderr.
        "ASAN_OPTIONS": f"detect_leaks=0:log_path={logs}/asan",
        # UBSan (GCC's, beside ASan) ignores log_path and writes to stderr: hence --capture=sys
        # below, which leaves file descriptor 2 alone, so that a report from a pytest process
        # reaches this output even when it ends the process. (A child process a test starts has its
        # stderr read by the test, and the report's exit fails it there.)
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
        "PYAGENTBENCH_SANITIZER": "1",
    }
    failed = None
    try:
        session.run("python", "-m", "pytest", "tests", "-n", "2", "-rs", "--capture=sys",
                    *session.posargs, env=env)
    except nox.command.CommandFailed as exc:
        failed = exc
    reports = sorted(path for path in logs.iterdir() if path.stat().st_size)
    for path in reports:
        print(f"---- ASan report {path.name} ----")
        print(path.read_text(errors="replace"))
    if reports:
        session.error(f"{len(reports)} ASan report(s), printed above")
    if failed is not None:
        session.error(f"the test suite failed under the sanitizer build: {failed}")
    session.log("no sanitizer report")


#: Seconds each fuzz target runs in CI.
FUZZ_SECONDS = 30


# atheris has Linux wheels for every supported CPython, not all in its newest release: with
# --only-binary pip picks 2.3.0 for 3.9 and 3.10, 3.0.0 for 3.11, 3.1.0 for 3.12 and 3.13 (without
# it, pip tries to build the newest from source, which needs clang). .ci/run runs this session on
# its own interpreter only (fuzz-3.11 there), to keep the stage under 4 minutes.
@nox.session(python=PYTHONS)
def fuzz(session: nox.Session) -> None:
    """The fuzz targets (fuzz/fuzz_*.py, two at a time, FUZZ_SECONDS each) and the stateful tests
    with their long profile (>= 10,000 steps per machine).

    Arguments after `--` go to fuzz/run.py: `--seconds 600`, `--jobs 1`, target names. A crash, a
    hang (an input running past 10 s), an exception the code does not document, or a divergence
    from a stateful model fails the session. See docs/hardening.md."""
    session.env["PYAGENTBENCH_WERROR"] = "1"
    # Only what the targets and the stateful tests import: the whole test extra (IPython, a
    # notebook kernel, ...) would double the stage's install time.
    session.install("--only-binary=atheris", "-e", ".", "atheris", "hypothesis>=6")
    out = Path(session.virtualenv.location) / "fuzz-run"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    # The stateful tests run beside the fuzzers (each fuzzer runs for a fixed time, so sharing the
    # cores costs it executions, not wall time); their output is printed once they end.
    stateful_log = out / "stateful.log"
    with open(stateful_log, "w") as log:
        stateful = subprocess.Popen(
            [str(Path(session.bin) / "python"), "-m", "pytest", "tests/runtime/test_stateful.py",
             "-p", "no:cacheprovider", "-q", "-s"],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            env={key: value for key, value in {**os.environ, **session.env}.items() if value is not None}
            | {"PYAGENTBENCH_STATEFUL_PROFILE": "long"})
    failed = None
    try:
        args = list(session.posargs) or ["--seconds", str(FUZZ_SECONDS)]
        session.run("python", "fuzz/run.py", "--jobs", "2", "--out", str(out), *args)
    except nox.command.CommandFailed as exc:
        failed = f"a fuzz target failed: {exc}"
    finally:
        returncode = stateful.wait()
    print("---- stateful tests (PYAGENTBENCH_STATEFUL_PROFILE=long) ----")
    print(stateful_log.read_text(errors="replace"))
    if returncode != 0:
        failed = (failed + "; " if failed else "") + f"the stateful tests failed (exit {returncode})"
    if failed:
        session.error(failed)
