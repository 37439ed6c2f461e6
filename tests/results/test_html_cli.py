"""``pyagentbench report --html`` and ``pytest --agentbench-html`` end to end, as a user runs them:
a suite saved twice with ``--benchmark-autosave`` (the second time allocating more per call), the
command in a subprocess in that folder; the exit status, the text it prints and the file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = """
import os

import pytest

ITEMS = int(os.environ.get("AGENTBENCH_TEST_ITEMS", "10"))


def plan():
    return [[None] for _ in range(ITEMS)]


@pytest.mark.slo(max_allocs_per_call=25)
def test_plan(agent_benchmark):
    agent_benchmark(plan)
"""

FAST = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "--benchmark-max-time=0.05",
        "--benchmark-min-rounds=3", "-o", "asyncio_default_fixture_loop_scope=function")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTEST_") and k != "GITHUB_STEP_SUMMARY"}
    env.update(extra)
    return env


def pytest_in(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", *FAST, *args], cwd=folder,
                          env=clean_env(**env), capture_output=True, text=True, timeout=600)


def command(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyagentbench", *args], cwd=folder,
                          env=clean_env(), capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("html-repo")
    (folder / "test_agents.py").write_text(SUITE)
    assert pytest_in(folder, "--benchmark-autosave").returncode == 0
    # 40 items: 30 more allocations per call, which breaks the budget and regresses allocs.
    assert pytest_in(folder, "--benchmark-autosave", AGENTBENCH_TEST_ITEMS="40").returncode == 1
    return folder


def test_the_storage_makes_a_report_with_trends_and_the_regression_marked(project: Path):
    done = command(project, "report", "--html", "trend.html")
    assert done.returncode == 1, done.stderr  # the newest run missed its budget
    assert done.stdout.startswith("wrote the HTML report of ") and done.stdout.endswith(
        " to trend.html (trends over 2 runs)\n")
    assert done.stderr == ""
    page = (project / "trend.html").read_text()
    assert "\u2717 1 MISSED" in page
    start = page.index("allocs_per_call across 2 runs")
    plot = page[start:page.index("</figure>", start)]
    assert re.search(r'<g class="regressed"><title>[^<]*, regressed \+\d+\.\d%', plot)


def test_two_runs_named_and_a_baseline(project: Path):
    done = command(project, "report", "--html", "two.html", "-b", "1", "1", "2")
    assert done.returncode == 1
    page = (project / "two.html").read_text()
    assert "Trends over 2 runs" in page
    assert '<div class="before-after">' in page
    assert re.search(r"\u25b2 \d+ regressed", page)  # the summary's baseline column
    row = re.search(r"<tr><td><code>allocs_per_call</code>.*?</tr>", page).group(0)
    assert "\u25b2 regressed" in row  # 10 -> 40 inner lists: 30 more allocations per call


def test_several_runs_without_html_is_a_usage_error(project: Path):
    done = command(project, "report", "1", "2")
    assert done.returncode == 2
    assert "several RUNs make the trends of the HTML report: add --html OUT.html" in done.stderr


def test_a_file_not_ours_is_not_replaced(project: Path):
    (project / "notes.html").write_text("<p>my notes</p>")
    done = command(project, "report", "--html", "notes.html")
    assert done.returncode == 2
    assert "--html: notes.html exists and was not written by pyagentbench" in done.stderr
    assert (project / "notes.html").read_text() == "<p>my notes</p>"
    # An earlier report is replaced.
    assert command(project, "report", "--html", "again.html", "1").returncode == 0
    again = command(project, "report", "--html", "again.html", "1", "-o", "again.md")
    assert again.returncode == 0
    assert (project / "again.md").read_text().startswith("<!-- pyagentbench report -->")


def test_the_plugin_writes_the_page_with_the_rounds(project: Path):
    done = pytest_in(project, "--agentbench-html=session.html")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "agentbench: wrote the HTML report to session.html" in done.stdout
    page = (project / "session.html").read_text()
    # Nothing was saved with --benchmark-save-data, yet the page has the rounds' histogram.
    assert 'data-plot="time-histogram"' in page and 'data-plot="rss-timeline"' in page


def test_the_plugin_refuses_a_file_not_ours_before_the_tests_run(project: Path):
    (project / "mine.html").write_text("<p>mine</p>")
    done = pytest_in(project, "--agentbench-html=mine.html")
    assert done.returncode == 4
    assert "--agentbench-html: mine.html exists and was not written by pyagentbench" in done.stderr
    assert (project / "mine.html").read_text() == "<p>mine</p>"
