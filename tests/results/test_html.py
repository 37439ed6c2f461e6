"""The HTML report: what its plots, tables and marks say for runs written by hand (so every
expected count and label follows from the numbers), that it is self-contained, and its size."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from pyagentbench.results.compare import parse_gates
from pyagentbench.results.html import HTML_MARKER, numeric_metrics, render_html
from pyagentbench.results.report import run_from_document
from pyagentbench.results.verdicts import baseline_changes

MiB = 1 << 20


def stats(data: list[float] | None = None, median: float = 1e-3, mean: float = 1e-3,
          **more: Any) -> dict[str, Any]:
    out = {"min": median, "max": median, "mean": mean, "stddev": 0.0, "median": median,
           "rounds": len(data) if data else 10, "iqr": 0.0, "iterations": 1, **more}
    if data is not None:
        out["data"] = data
    return out


def entry(fullname: str, record: dict[str, Any] | None = None, **stat: Any) -> dict[str, Any]:
    return {"name": fullname.split("::")[-1], "fullname": fullname, "group": None, "params": None,
            "stats": stats(**stat), "extra_info": {"agentbench": record} if record is not None else {}}


def document(*entries: dict[str, Any], when: str = "2026-12-03T12:00:00+00:00",
             commit: str = "0123456789abcdef") -> dict[str, Any]:
    return {"machine_info": {"node": "ci-7", "system": "Linux"},
            "commit_info": {"id": commit, "branch": "main", "dirty": False},
            "datetime": when, "benchmarks": list(entries)}


def page_of(*entries: dict[str, Any]) -> str:
    return render_html([run_from_document(document(*entries), "run.json")])


def figure(page: str, kind: str) -> str:
    """The first <figure> of the given data-plot kind."""
    start = page.index(f'<figure class="plot" data-plot="{kind}">')
    return page[start:page.index("</figure>", start)]


def test_the_time_histogram_counts_the_saved_rounds_and_marks_p50_p95_p99():
    page = page_of(entry("t.py::test_a", {}, data=[0.001] * 10 + [0.002] * 5, median=0.001))
    plot = figure(page, "time-histogram")
    assert "Time per call: 15 rounds" in plot
    # Two bars: the 10 rounds at 1 ms (first bin) and the 5 at 2 ms (last bin).
    assert re.findall(r"<title>(\d+) rounds</title>", plot) == ["10", "5"]
    assert "p50 1 ms" in plot  # pytest-benchmark's median
    assert "p95 2 ms" in plot and "p99 2 ms" in plot  # nearest rank of the 15 rounds


def test_rounds_that_all_took_the_same_time_make_one_bar_on_a_millisecond_axis():
    plot = figure(page_of(entry("t.py::test_a", {}, data=[0.001] * 5, median=0.001)),
                  "time-histogram")
    assert re.findall(r"<title>(\d+) rounds</title>", plot) == ["5"]
    ticks = re.findall(r'<text class="tk m"[^>]*>([^<]+)</text>', plot)
    assert ticks and all(t.endswith(" ms") for t in ticks)
    assert all(0.95 <= float(t.split()[0]) <= 1.05 for t in ticks)  # 1 ms, give or take 5%


def test_the_record_percentiles_are_the_ones_marked_when_it_has_them():
    record = {"median_s": 0.0011, "p95_s": 0.0017, "p99_s": 0.0019}
    plot = figure(page_of(entry("t.py::test_a", record, data=[0.001] * 10 + [0.002] * 5)),
                  "time-histogram")
    assert "p50 1.1 ms" in plot and "p95 1.7 ms" in plot and "p99 1.9 ms" in plot


def test_a_slow_round_past_the_far_out_fence_is_named_under_the_plot():
    page = page_of(entry("t.py::test_a", {}, data=[0.001] * 200 + [0.1], median=0.001))
    plot = figure(page, "time-histogram")
    assert re.findall(r"<title>(\d+) rounds</title>", plot) == ["200"]
    assert "1 round from 100 ms to 100 ms: \u2192 right of the axis" in plot


def test_without_saved_rounds_the_quantiles_are_drawn():
    page = page_of(entry("t.py::test_a", {}, median=0.002, q1=0.001, q3=0.003, min=0.0005, max=0.004))
    plot = figure(page, "time-quantiles")
    assert "the run saved no rounds" in plot
    assert "middle half of the rounds: 1 ms to 3 ms" in plot
    assert "p50 2 ms" in plot
    assert 'data-plot="time-histogram"' not in page


def budget(metric: str, limit: float, text: str, verdict: str, value: float | None) -> dict[str, Any]:
    return {"keyword": metric, "metric": metric, "bound": "max", "limit": limit, "limit_text": text,
            "value": value, "verdict": verdict, "message": ""}


def test_budgets_are_lines_on_their_plot_and_verdicts_in_the_table():
    record = {"p99_s": 0.0012, "slo": [budget("p99", 0.0015, "1.5ms", "met", 0.0012),
                                       budget("p50", 0.0001, "100us", "missed", 0.001)]}
    page = page_of(entry("t.py::test_a", record, data=[0.001] * 10 + [0.002] * 5))
    plot = figure(page, "time-histogram")
    assert re.search(r'<g class="budget"><title>SLO p99 &lt;= 1.5ms \(met\)</title><line', plot)
    # 100 us is left of an axis that starts at 1 ms: named under the plot, not drawn on it.
    assert "SLO p50 &lt;= 100us (MISSED): \u2190 left of the axis" in plot
    row = re.search(r'<tr data-bench="t.py::test_a">.*?</tr>', page).group(0)
    assert "\u2717 1 MISSED</span>, \u2713 1 MET" in row
    assert "\u2713 MET</span> SLO <code>p99</code>: at most 1.5ms, measured 1.2 ms" in page


def test_the_rss_timeline_shows_a_50_mib_step_and_a_peak_budget_above_the_start():
    record = {"rss_timeline": {"t_s": [0.0, 0.1, 0.2], "rss_bytes": [10 * MiB, 60 * MiB, 60 * MiB]},
              "slo": [budget("peak_rss", 64 * MiB, "64MiB", "met", 50 * MiB)]}
    plot = figure(page_of(entry("t.py::test_a", record)), "rss-timeline")
    assert "RSS from 10 MiB at the start to a peak of 60 MiB" in plot
    assert "peak 50 MiB above start" in plot
    # The peak_rss budget is over the start: its line is at 10 + 64 = 74 MiB.
    assert "SLO peak_rss &lt;= 64MiB (met): RSS 74 MiB" in plot


def test_a_load_run_draws_its_latency_distribution_from_the_percentiles():
    record = {"load_latency_quantiles_s": [i * 1e-3 for i in range(101)],  # uniform, 0 to 100 ms
              "latency_p50_s": 0.05, "latency_p95_s": 0.095, "latency_p99_s": 0.099}
    plot = figure(page_of(entry("t.py::test_load", record)), "load-histogram")
    shares = re.findall(r"<title>([\d.]+)% of tasks</title>", plot)
    assert len(shares) == 30 and {s for s in shares} == {"3.3"}  # 100% over 30 equal bins
    assert "p50 50 ms" in plot and "p95 95 ms" in plot and "p99 99 ms" in plot


def test_any_numeric_metric_of_the_record_is_shown():
    record = {"tokens_in": 1200, "cost_usd": 0.0042, "judge_score": 0.5, "peak_rss_bytes": MiB,
              "flag": True, "label": "x", "samples": 300}
    assert numeric_metrics(record) == {"tokens_in": 1200.0, "cost_usd": 0.0042,
                                       "judge_score": 0.5, "peak_rss_bytes": float(MiB)}
    page = page_of(entry("t.py::test_a", record))
    other = page[page.index("<h3>Other metrics</h3>"):]
    other = other[:other.index("</div>")]
    assert "<code>tokens_in</code>: 1,200" in other
    assert "<code>cost_usd</code>: 0.0042" in other
    assert "<code>judge_score</code>: 0.5" in other
    assert "peak_rss_bytes" not in other  # ours: in the summary and the full table
    assert "<code>peak_rss_bytes</code></td><td>1 MiB" in page


def compare(now, before):
    return baseline_changes(parse_gates("mean:10%"), now.records(), before.records())


def test_trends_mark_the_run_where_a_metric_regressed():
    runs = [run_from_document(document(entry("t.py::test_a", {"mean_s": mean, "tokens_in": tokens}),
                                       when=f"2026-12-0{day}T12:00:00+00:00", commit=f"abc{day}def"),
                              f"run{day}.json")
            for day, mean, tokens in ((1, 0.001, 100), (2, 0.00102, 100), (3, 0.002, 150))]
    page = render_html(runs, compare=compare)
    trends = page[page.index('<details class="trends"'):]
    mean_plot = figure(trends, "trend")
    assert "mean_s across 3 runs" in mean_plot
    assert "regressed +96.1%" in mean_plot  # 1.02 ms -> 2 ms; 1 -> 1.02 ms is within 10%
    assert mean_plot.count('<g class="regressed">') == 1  # on run 3 only
    assert re.search(r'<g class="regressed"><title>12-03 12:00 abc3def: 2 ms, regressed', mean_plot)
    assert "mean_s across 3 runs (x: run number)" in mean_plot
    assert "<li>3: 12-03 12:00 abc3def <code>run3.json</code></li>" in page  # the x legend
    assert "tokens_in across 3 runs" in trends  # a custom metric gets its trend too


def test_a_baseline_gives_the_before_after_view_and_the_summary_column():
    base = run_from_document(document(entry("t.py::test_a", {"mean_s": 0.001})), "base.json")
    now = run_from_document(document(entry("t.py::test_a", {"mean_s": 0.002})), "now.json")
    page = render_html([now], base, compare(now, base), compare=compare)
    view = page[page.index('<div class="before-after">'):]
    row = re.search(r"<tr><td><code>mean_s</code>.*?</tr>", view).group(0)
    assert "<td>1 ms</td><td>2 ms</td><td>+100.0%</td>" in row
    assert "\u25b2 regressed" in row
    assert "\u25b2 1 regressed" in page[:page.index("</table>")]


def test_the_page_is_self_contained_and_escapes_what_it_shows():
    record = {"rss_timeline": {"t_s": [0, 1], "rss_bytes": [1, 2]}}
    page = page_of(entry("t.py::test_<script>alert(1)</script>", record, data=[0.001] * 3))
    assert page.startswith("<!DOCTYPE html>\n" + HTML_MARKER)
    assert "default-src 'none'" in page  # the browser may fetch nothing
    assert re.search(r"https?://", page) is None
    assert re.search(r"""(src|href)=["'](?!#)""", page) is None  # links only within the page
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page


def big_run(n: int, seed: int, when: str) -> dict[str, Any]:
    rng = random.Random(seed)
    entries = []
    for i in range(n):
        rounds = [0.001 * (1 + rng.random()) for _ in range(1000)]
        rss = [50 * MiB + rng.randrange(40 * MiB) for _ in range(512)]
        record = {
            "median_s": 0.0015, "p95_s": 0.0019, "p99_s": 0.00199, "mean_s": 0.0015,
            "peak_rss_bytes": 40 * MiB, "cpu_percent": 90.0, "allocs_per_call": 14.0,
            "bytes_per_call": 900.0, "tokens_in": 1000 + i, "cost_usd": 0.01,
            "rss_timeline": {"t_s": [k * 0.01 for k in range(512)], "rss_bytes": rss},
            "load_latency_quantiles_s": sorted(rng.random() * 0.01 for _ in range(101)),
            "latency_p50_s": 0.005, "throughput_per_s": 100.0,
            "slo": [budget("p99", 0.002, "2ms", "met", 0.00199)],
        }
        entries.append(entry(f"tests/test_big.py::test_case[{i}]", record, data=rounds))
    return document(*entries, when=when)


def test_a_100_benchmark_run_is_under_2_mb():
    run = run_from_document(big_run(100, 1, "2026-12-03T12:00:00+00:00"), "big.json")
    page = render_html([run])
    assert page.count('<section class="bench"') == 100
    assert page.count('data-plot="time-histogram"') == 100
    assert page.count('data-plot="rss-timeline"') == 100
    assert page.count('data-plot="load-histogram"') == 100
    assert len(page.encode()) < 2_000_000, len(page.encode())


def test_five_runs_of_trends_add_about_a_kilobyte_per_chart():
    runs = [run_from_document(big_run(100, day, f"2026-12-0{day}T12:00:00+00:00"), f"r{day}.json")
            for day in range(1, 6)]
    one = len(render_html(runs[-1:]).encode())
    page = render_html(runs, compare=compare)
    charts = page.count('data-plot="trend"')
    assert charts == 100 * 12  # 12 numeric metrics per benchmark
    assert (len(page.encode()) - one) / charts < 1400, (len(page.encode()) - one) / charts


def test_no_runs_is_an_error():
    with pytest.raises(ValueError, match="at least one run"):
        render_html([])


def test_pygal_charts_would_fetch_a_script_and_weigh_more_than_ours():
    """Why the plots are drawn here (docs/html-report.md): pygal's SVG references a tooltip
    script on a CDN, and its histogram of two bars and its 512-point line are 17 KB and 150 KB."""
    pygal = pytest.importorskip("pygal")
    histogram = pygal.Histogram()
    histogram.add("rounds", [(10, 0.001, 0.0011), (5, 0.0019, 0.002)])
    svg = histogram.render(is_unicode=True)
    assert re.search(r"<script[^>]+https://[^\"]+\.js", svg)
    line = pygal.XY()
    line.add("rss", [(i * 0.01, 50 + i % 7) for i in range(512)])
    assert len(svg) > 15_000 and len(line.render(is_unicode=True)) > 100_000
    ours = page_of(entry("t.py::test_a", {"rss_timeline": {
        "t_s": [i * 0.01 for i in range(512)], "rss_bytes": [(50 + i % 7) * MiB for i in range(512)]}},
        data=[0.001] * 10 + [0.0019] * 5))
    assert len(figure(ours, "time-histogram")) < 5_000
    assert len(figure(ours, "rss-timeline")) < 20_000


def test_a_load_runs_latency_percentiles_mark_the_load_plot_not_the_rounds():
    record = {"load_latency_quantiles_s": [0.01 + i * 1e-4 for i in range(101)],
              "latency_p50_s": 0.015, "latency_p95_s": 0.0195, "latency_p99_s": 0.0199}
    page = page_of(entry("t.py::test_load", record, data=[0.001] * 10, median=0.001))
    assert "p50 1 ms" in figure(page, "time-histogram")  # the service times' median
    assert "p50 15 ms" in figure(page, "load-histogram")  # the load's latency
