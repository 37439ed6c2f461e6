"""The HTML report in a real browser: a suite run with ``pytest --benchmark-json
--agentbench-html``, the report also made by ``pyagentbench report --html``, each opened from
disk in headless Chromium. The browser's console (``--enable-logging=stderr``) must show no
message, its network log (``--log-net-log``) no request by the page, the screenshot must be made,
and the DOM it built must hold every benchmark's section and plots.

Skipped, saying why, where no Chromium is installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Quiet the browser's own background traffic (update checks, sync...); the page's requests are
#: told apart by their network isolation key anyway.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--enable-logging=stderr", "--v=0")

SUITE = """
import time

import pytest


def plan():
    return [[None] for _ in range(10)]


@pytest.mark.slo(p99="50ms", max_allocs_per_call=25)
def test_plan(agent_benchmark):
    agent_benchmark(plan)


def hold():
    block = b"x" * (20 << 20)
    time.sleep(0.002)
    return len(block)


@pytest.mark.slo(max_rss="64MiB")
def test_memory(agent_benchmark):
    agent_benchmark.pedantic(hold, rounds=4)


def test_load(agent_benchmark):
    agent_benchmark.throughput(lambda p: time.sleep(0.0005 * p), list(range(1, 9)) * 4,
                               concurrency=4)


def test_plain(benchmark):
    benchmark(sum, range(100))
"""
PLOTS = {"test_plan": {"time-histogram", "rss-timeline"},
         "test_memory": {"time-histogram", "rss-timeline"},
         "test_load": {"time-histogram", "rss-timeline", "load-histogram"},
         "test_plain": {"time-histogram"}}


#: PYAGENTBENCH_BROWSER: "skip" skips these tests (.ci/run, while it installs Chromium beside the
#: other stages), "require" fails them where no Chromium is found (its browser stage); unset, they
#: run where a Chromium is found and skip elsewhere.
BROWSER_MODE = os.environ.get("PYAGENTBENCH_BROWSER", "")


def chromium() -> str:
    if BROWSER_MODE == "skip":
        pytest.skip("PYAGENTBENCH_BROWSER=skip: the browser tests run in a stage of their own")
    for name in (os.environ.get("PYAGENTBENCH_CHROMIUM"), *CANDIDATES):
        if name and shutil.which(name):
            return str(shutil.which(name))
    message = "no Chromium found (Debian: apt-get install chromium; or set PYAGENTBENCH_CHROMIUM)"
    if BROWSER_MODE == "require":
        pytest.fail(message + ", and PYAGENTBENCH_BROWSER=require", pytrace=False)
    pytest.skip(message)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith("PYTEST_") and k != "GITHUB_STEP_SUMMARY"}


class Visit:
    """What Chromium made of a page: its DOM, its console messages, the URLs the page asked for."""

    def __init__(self, browser: str, page: Path, folder: Path, fragment: str = "",
                 screenshot: Path | None = None, width: int = 1280) -> None:
        net_log = folder / f"{page.stem}-{width}.netlog.json"
        profile = folder / f"profile-{page.stem}-{width}"
        what = [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
        done = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}",
                               f"--log-net-log={net_log}", f"--window-size={width},2400", *what,
                               page.as_uri() + fragment],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        self.dom = done.stdout
        self.console = re.findall(r":CONSOLE[^\]]*\] (.*)", done.stderr)
        self.requests = self._page_requests(net_log)

    @staticmethod
    def _page_requests(net_log: Path) -> list[str]:
        """URLs the page (not the browser's own services) requested, from Chromium's NetLog."""
        text = net_log.read_text()
        try:
            events = json.loads(text)["events"]
        except ValueError:  # cut off when the browser exits; a complete log closes with "]}"
            events = json.loads(text.rstrip().rstrip(",") + "]}")["events"]
        found = []
        for event in events:
            params = event.get("params") or {}
            url = params.get("url")
            if url and "file://" in str(params.get("network_isolation_key", "")) \
                    and not url.startswith(("file:", "data:")):
                found.append(url)
        return found


@pytest.fixture(scope="module")
def browser() -> str:
    return chromium()


def test_the_detector_sees_console_errors_and_page_requests(browser: str, tmp_path: Path):
    """The checks below would see a problem: a page that fetches and errs is caught."""
    leak = tmp_path / "leak.html"
    leak.write_text('<!DOCTYPE html><img src="http://127.0.0.1:9/x.png">'
                    '<script>console.error("boom"); notAFunction();</script>')
    seen = Visit(browser, leak, tmp_path)
    assert "http://127.0.0.1:9/x.png" in seen.requests
    assert any('"boom"' in line for line in seen.console)
    assert any("notAFunction is not defined" in line for line in seen.console)


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("html-browser")
    (folder / "test_suite.py").write_text(SUITE)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
         "-o", "asyncio_default_fixture_loop_scope=function", "--benchmark-max-time=0.05",
         "--benchmark-json=run.json", "--agentbench-html=plugin.html"],
        cwd=folder, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "agentbench: wrote the HTML report to plugin.html" in run.stdout
    made = subprocess.run([sys.executable, "-m", "pyagentbench", "report", "--html", "cli.html",
                           "run.json"], cwd=folder, env=clean_env(), capture_output=True,
                          text=True, timeout=120)
    assert made.returncode == 0, made.stdout + made.stderr
    assert made.stdout == "wrote the HTML report of run.json to cli.html\n"
    return folder


def sections(dom: str) -> dict[str, set[str]]:
    """Benchmark fullname -> the kinds of plot its section holds, from the browser's DOM."""
    found: dict[str, set[str]] = {}
    for match in re.finditer(r'<section class="bench" id="b\d+" data-bench="([^"]+)">(.*?)</section>',
                             dom, re.S):
        found[match.group(1)] = set(re.findall(r'data-plot="([\w-]+)"><figcaption>[^<]+'
                                               r'</figcaption><svg', match.group(2)))
    return found


@pytest.mark.parametrize("name", ["plugin.html", "cli.html"])
def test_the_report_opens_offline_with_every_section_and_plot(browser: str, reports: Path, name: str):
    page = reports / name
    seen = Visit(browser, page, reports)
    assert seen.console == []
    assert seen.requests == []
    found = sections(seen.dom)
    assert {k.split("::")[-1]: v for k, v in found.items()} == PLOTS
    assert seen.dom.count("<tr data-bench=") == 4  # the summary table


def test_the_summary_table_sorts_in_the_browser(browser: str, reports: Path):
    """``#sort=COLUMN`` runs the same sorting the header buttons run: by p50, descending."""
    seen = Visit(browser, reports / "cli.html", reports, "#sort=-p50")
    assert seen.console == []
    rows = re.findall(r'<tr data-bench="[^"]*::(\w+)"><td data-v="[^"]*">.*?</td><td data-v="([^"]*)">',
                      seen.dom)
    p50 = [float(v) for _, v in rows]
    assert p50 == sorted(p50, reverse=True) and len(p50) == 4
    assert rows[0][0] in ("test_load", "test_memory")  # milliseconds, not microseconds
    assert 'aria-sort="descending"' in seen.dom


#: Appended to a copy of the page: clicks the p50 header twice (ascending, then descending), lays
#: the page out WIDTH px wide (a headless window is at least 500 px wide, so a phone's 375 px is
#: set on the page; the phone layout's media query, up to 600 px, applies at both) and writes the
#: right edge of the rightmost element (what a box that scrolls sideways holds left out), for the
#: DOM dump to show.
PROBE = """<script>
var button = document.querySelector('th[data-col="p50"] button'); button.click(); button.click();
document.documentElement.style.width = 'WIDTHpx';
var right = 0;
document.querySelectorAll('body *').forEach(function (e) {
  var box = e.parentElement && e.parentElement.closest('.scroll');
  if (!box) right = Math.max(right, e.getBoundingClientRect().right);
});
document.body.setAttribute('data-right', Math.ceil(right));
</script></body>"""


@pytest.mark.parametrize("width", [1280, 375])
def test_header_clicks_sort_and_the_page_fits_the_width(browser: str, reports: Path, width: int):
    probe = reports / f"probe-{width}.html"
    probe.write_text((reports / "cli.html").read_text().replace("</body>",
                                                                 PROBE.replace("WIDTH", str(width))))
    seen = Visit(browser, probe, reports, width=width)
    assert seen.console == [] and seen.requests == []
    rows = re.findall(r'<tr data-bench="[^"]*::(\w+)"><td data-v="[^"]*">.*?</td><td data-v="([^"]*)">',
                      seen.dom)
    p50 = [float(v) for _, v in rows]
    assert len(p50) == 4 and p50 == sorted(p50, reverse=True)
    # Nothing is wider than the page: the tables scroll sideways inside their own boxes.
    assert int(re.search(r'data-right="(\d+)"', seen.dom).group(1)) <= width


@pytest.mark.parametrize("width", [1280, 375])
def test_a_screenshot_at_desktop_and_phone_width(browser: str, reports: Path, width: int):
    shot = reports / f"report-{width}.png"
    seen = Visit(browser, reports / "cli.html", reports, screenshot=shot, width=width)
    assert seen.console == [] and seen.requests == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == width  # the PNG's width: the page's viewport
