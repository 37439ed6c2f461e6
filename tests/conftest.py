"""Shared test configuration."""

import importlib.util
import os

import pytest

pytest_plugins = ["pytester"]

_XDIST_VARIABLES = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")


@pytest.fixture(autouse=True)
def _child_pytests_run_clean(request, monkeypatch):
    """Every pytest a test starts (pytester's, or a subprocess) runs as a user's would.

    Under `pytest -n N` this process is an xdist worker, and pytest-benchmark turns benchmarks off
    in any pytest that inherits the worker's environment; a child must not append its report to
    the CI job's summary; and plugins the test extra brings along are kept out of children: the
    hypothesis plugin imports all of hypothesis at the end of every run (about 1 s of CPU), and
    langsmith's (langchain-core's dependency) costs about 2.4 s at every start. pytest-asyncio
    warns in every pytest that does not set its loop scope. (pytester clears PYTEST_ADDOPTS when
    it starts, so it starts first.)"""
    for name in _XDIST_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    if "pytester" in request.fixturenames:
        request.getfixturevalue("pytester")
    options = [os.environ.get("PYTEST_ADDOPTS", "")]
    if importlib.util.find_spec("pytest_asyncio") is not None:
        options.append("-o asyncio_default_fixture_loop_scope=function")
    if importlib.util.find_spec("_hypothesis_pytestplugin") is not None:
        options.append("-p no:hypothesispytest")
    if importlib.util.find_spec("langsmith") is not None:
        options.append("-p no:langsmith_plugin")
    monkeypatch.setenv("PYTEST_ADDOPTS", " ".join(o for o in options if o))


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
