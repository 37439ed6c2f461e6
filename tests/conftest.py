"""Shared test configuration."""

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
