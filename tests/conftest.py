"""Shared test configuration."""

import importlib.util
import os

import pytest

pytest_plugins = ["pytester"]

_XDIST_VARIABLES = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")


@pytest.fixture(autouse=True)
def _pytester_runs_are_not_xdist_workers(request, monkeypatch):
    """Under `pytest -n N` this process is an xdist worker, and pytest-benchmark turns benchmarks
    off in any pytest that inherits the worker's environment; the suites pytester runs must not."""
    if "pytester" in request.fixturenames:
        for name in _XDIST_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        # A suite pytester runs must not append its report to the CI job's real summary.
        monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
        if importlib.util.find_spec("pytest_asyncio") is not None:
            # pytest-asyncio (in the test extra) warns in every pytest that does not set this
            # option, and those warnings are not ours: the suites pytester runs set it. (pytester
            # clears PYTEST_ADDOPTS when it starts, so it starts first.)
            request.getfixturevalue("pytester")
            addopts = os.environ.get("PYTEST_ADDOPTS", "")
            monkeypatch.setenv("PYTEST_ADDOPTS",
                               f"{addopts} -o asyncio_default_fixture_loop_scope=function".strip())
        if importlib.util.find_spec("_hypothesis_pytestplugin") is not None:
            # hypothesis's pytest plugin (the test extra installs hypothesis) imports all of
            # hypothesis at the end of every pytest run, about 1 s of CPU. The suites pytester runs
            # do not use it; without it there, tests/integrations/test_plugin.py takes 61 s, not 100.
            request.getfixturevalue("pytester")
            addopts = os.environ.get("PYTEST_ADDOPTS", "")
            monkeypatch.setenv("PYTEST_ADDOPTS", f"{addopts} -p no:hypothesispytest".strip())


# ---- the sanitizer stage (.ci/run, `nox -s sanitizer`) ----

#: Set to 1 by the sanitizer stage, whose extension is built with -fsanitize=address,undefined.
SANITIZER_ENV = "PYAGENTBENCH_SANITIZER"


def pytest_collection_modifyitems(config, items):
    """Skips the tests marked no_sanitizer (registered in pyproject.toml), each with its reason,
    in the sanitizer stage only; a mark without a reason is a usage error everywhere."""
    sanitized = os.environ.get(SANITIZER_ENV) == "1"
    for item in items:
        for mark in item.iter_markers("no_sanitizer"):
            reason = mark.kwargs.get("reason") or (mark.args[0] if mark.args else "")
            if not reason:
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.no_sanitizer needs reason=..., "
                                        "saying why the test cannot hold under a sanitizer")
            if sanitized:
                item.add_marker(pytest.mark.skip(reason=f"under the sanitizer build: {reason}"))
