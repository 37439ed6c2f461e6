"""The HTML report: saved runs as one self-contained page with plots.

One file, with its CSS, its script (a few lines that sort the summary table) and its plots (SVG,
drawn here) inline: no library, no font, no image and no request to any server, so it opens from
disk, offline, and can be attached to a CI run as it is. The page's Content-Security-Policy
forbids every fetch, so a browser could not load anything even if the page asked.

The page shows the last of the runs given ("now"):

- a summary table (sortable by each column) with each benchmark's latency, throughput, memory, CPU,
  allocations and its verdicts: SLO budgets MET or MISSED, saved gates passed or FAILED, and,
  against a baseline, the metrics that regressed or improved;
- per benchmark: the distribution of the time per call (a histogram of the rounds the run saved,
  or, without them, a box of the quantiles it has) with p50, p95 and p99 marked; the RSS timeline;
  the latency distribution of a load run; every numeric metric of its record (tokens, cost and any
  custom metric included); SLO budgets drawn as lines on the plot of their metric;
- with earlier runs, a trend chart per benchmark and metric (x: each run's date and commit), with
  the regressions and improvements between consecutive runs marked;
- with a baseline, a before/after view of each benchmark's metrics.

This module reads data and writes text; it never imports the pytest plugin or the runtime.
"""

from __future__ import annotations

import html
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

from .metrics import METRICS, metric_value, number_problem
from .report import BenchmarkResult, Run, _date, _display_names, _machine
from .units import format_bytes, format_count, format_duration, format_rate
from .verdicts import FAILED, MET, MISSED, Change

__all__ = ["HTML_MARKER", "render_html", "numeric_metrics", "Compare"]

#: In the first lines of every HTML report: marks a file this software wrote, which it may replace.
HTML_MARKER = "<!-- pyagentbench html report -->"

#: What the report asks to know what changed between two runs: (now, before) -> changes.
Compare = Callable[[Run, Run], Sequence[Change]]

#: The page may load nothing: no script, style, image, font or connection from anywhere.
CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "img-src data:")

#: Histogram bars of the time per call.
HISTOGRAM_BINS = 30
#: Bookkeeping keys of a record that are numbers but not metrics worth a row or a trend.
_BOOKKEEPING = {
    "start_rss_bytes", "samples", "sample_interval_s", "loops", "rounds", "tail_calls",
    "heap_trimmed_bytes", "per_call_pass",
}
#: The summary table: header, metric name.
_SUMMARY_COLUMNS = [
    ("p50", "p50"), ("p95", "p95"), ("p99", "p99"), ("mean", "mean"),
    ("throughput", "throughput"), ("errors", "error_rate"), ("peak memory", "peak_rss"),
    ("CPU", "cpu_percent"), ("allocs/call", "allocs_per_call"),
]
_KEY_METRIC = {key: m for m in METRICS.values() for key in m.keys}


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


# ---- numbers ------------------------------------------------------------------------------------


def _kind_of_key(key: str) -> str:
    """The unit of a record key, from its known metric or its suffix (``_s``, ``_bytes``, ...)."""
    known = _KEY_METRIC.get(key)
    if known is not None:
        return known.kind
    if key.endswith("_per_s"):
        return "rate"
    if key.endswith("_s"):
        return "duration"
    if key.endswith("_bytes"):
        return "size"
    if key.endswith("_percent"):
        return "percent"
    return "number"


def _format_key(key: str, value: float) -> str:
    """*value* of the record key *key* in its unit."""
    known = _KEY_METRIC.get(key)
    return known.format(value) if known is not None else _format_kind(_kind_of_key(key), value)


def _format_kind(kind: str, value: float) -> str:
    if kind == "duration":
        return format_duration(value)
    if kind == "size":
        return format_bytes(value)
    if kind == "rate":
        return format_rate(value, "")
    if kind == "percent":
        return f"{value:.1f} %"
    if kind == "ratio":
        return f"{value * 100:.3g} %"
    if kind == "count":
        return format_count(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.4g}"


def numeric_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """Every finite number in a benchmark's record, by key (booleans and bookkeeping left out):
    the metrics this software knows and any other a run saved (tokens, cost, custom ones)."""
    found = {}
    for key, value in record.items():
        if key in _BOOKKEEPING or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and number_problem(value) is None:
            found[key] = float(value)
    return found


def _nearest_rank(ordered: Sequence[float], p: float) -> float:
    index = max(0, math.ceil(p / 100.0 * len(ordered)) - 1)
    return ordered[min(index, len(ordered) - 1)]


def _round_times(b: BenchmarkResult) -> list[float]:
    """The time per call of each saved round (pytest-benchmark's ``stats.data``), if saved."""
    data = b.stats.get("data")
    if not isinstance(data, list):
        return []
    return [float(v) for v in data
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def _percentiles(b: BenchmarkResult, times: Sequence[float]) -> list[tuple[str, float]]:
    """p50, p95 and p99 of the time per call: the timing loop's in the record where it has them,
    else pytest-benchmark's median and the rounds' nearest-rank percentiles."""
    ordered = sorted(times)
    out = []
    for name, p, key in (("p50", 50, "median_s"), ("p95", 95, "p95_s"), ("p99", 99, "p99_s")):
        # The timing loop's own keys: a load run's latency_p50_s etc. are the load plot's.
        value = numeric_metrics(b.record).get(key)
        if value is None and name == "p50":
            value = _stat(b, "median")
        if value is None and ordered:
            value = _nearest_rank(ordered, p)
        if value is not None:
            out.append((name, value))
    return out


def _record_number(record: Mapping[str, Any], name: str) -> float | None:
    try:
        return metric_value(record, METRICS[name])
    except ValueError:
        return None


def _stat(b: BenchmarkResult, key: str) -> float | None:
    value = b.stats.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


# ---- SVG ----------------------------------------------------------------------------------------

W, H = 480, 210
LEFT, RIGHT, TOP, BOTTOM = 62, 14, 40, 30


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw), default=raw)
    first = math.ceil(lo / step) * step
    ticks, v = [], first
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    return ticks


class _Plot:
    """A chart frame: data coordinates to pixels, axes, and the parts drawn on it."""

    def __init__(self, title: str, xlo: float, xhi: float, ylo: float, yhi: float,
                 xfmt: Callable[[float], str], yfmt: Callable[[float], str], kind: str,
                 ylabel: str = "") -> None:
        if xhi <= xlo:
            xlo, xhi = xlo - (abs(xlo) * 0.1 or 1.0), xhi + (abs(xhi) * 0.1 or 1.0)
        if yhi <= ylo:
            ylo, yhi = ylo - (abs(ylo) * 0.1 or 1.0), yhi + (abs(yhi) * 0.1 or 1.0)
        self.title, self.kind, self.ylabel = title, kind, ylabel
        self.xlo, self.xhi, self.ylo, self.yhi = xlo, xhi, ylo, yhi
        self.xfmt, self.yfmt = xfmt, yfmt
        self.parts: list[str] = []
        self.notes: list[tuple[str, str]] = []  # (class, text) shown under the plot
        self.marks = 0

    def x(self, v: float) -> float:
        return LEFT + (v - self.xlo) / (self.xhi - self.xlo) * (W - LEFT - RIGHT)

    def y(self, v: float) -> float:
        return H - BOTTOM - (v - self.ylo) / (self.yhi - self.ylo) * (H - TOP - BOTTOM)

    def axes(self, xticks: Iterable[tuple[float, str]] | None = None) -> None:
        p = self.parts
        p.append(f'<path class="ax" d="M{LEFT} {TOP}V{H - BOTTOM}H{W - RIGHT}"/>')
        for v in _ticks(self.ylo, self.yhi, 3 if self.kind == "trend" else 4):
            yy = round(self.y(v))
            p.append(f'<path class="grid" d="M{LEFT} {yy}H{W - RIGHT}"/>'
                     f'<text class="tk e" x="{LEFT - 4}" y="{yy + 4}">{_e(self.yfmt(v))}</text>')
        shown = list(xticks) if xticks is not None else [(v, self.xfmt(v)) for v in _ticks(self.xlo, self.xhi)]
        for v, label in shown:
            p.append(f'<text class="tk m" x="{round(self.x(v))}" y="{H - BOTTOM + 15}">{_e(label)}</text>')

    def vmark(self, value: float, label: str, cls: str) -> None:
        """A vertical line at x=value labelled above the plot (labels stagger in three rows); a
        value beyond the axis is named at its edge, with an arrow."""
        if not self.xlo <= value <= self.xhi:
            side = "\u2192 right of" if value > self.xhi else "\u2190 left of"
            self.notes.append((cls, f"{label}: {side} the axis"))
            return
        xx = self.x(value)
        row = self.marks % 3
        self.marks += 1
        anchor = "end" if xx > W * 0.7 else "start"
        dx = -3 if anchor == "end" else 3
        self.parts.append(
            f'<g class="{cls}"><title>{_e(label)}</title>'
            f'<line x1="{xx:.1f}" y1="{TOP - 2 - row * 0:.0f}" x2="{xx:.1f}" y2="{H - BOTTOM}"/>'
            f'<text x="{xx + dx:.1f}" y="{12 + row * 11}" text-anchor="{anchor}">{_e(label)}</text></g>')

    def hmark(self, value: float, label: str, cls: str) -> None:
        """A horizontal line at y=value, labelled at its right end."""
        if not self.ylo <= value <= self.yhi:
            return
        yy = self.y(value)
        self.parts.append(
            f'<g class="{cls}"><title>{_e(label)}</title>'
            f'<line x1="{LEFT}" y1="{yy:.1f}" x2="{W - RIGHT}" y2="{yy:.1f}"/>'
            f'<text x="{W - RIGHT - 2}" y="{yy - 3:.1f}" text-anchor="end">{_e(label)}</text></g>')

    def svg(self, desc: str) -> str:
        unit = f" (y: {self.ylabel})" if self.ylabel else ""
        return (f'<figure class="plot" data-plot="{_e(self.kind)}"><figcaption>{_e(self.title)}'
                f'{_e(unit)}</figcaption><svg viewBox="0 0 {W} {H}" role="img" aria-label="{_e(desc)}">'
                f'<desc>{_e(desc)}</desc>{"".join(self.parts)}</svg>'
                + "".join(f'<p class="note {_e(c)}">{_e(t)}</p>' for c, t in self.notes)
                + '</figure>')


def _polyline(points: Iterable[tuple[float, float]]) -> str:
    """Pixel points as an SVG path, integer-rounded, repeats and flat middles dropped."""
    kept: list[tuple[int, int]] = []
    for px, py in points:
        pt = (round(px), round(py))
        if kept and kept[-1] == pt:
            continue
        if len(kept) >= 2 and kept[-1][1] == pt[1] == kept[-2][1]:
            kept[-1] = pt  # a flat stretch needs its two ends only
            continue
        kept.append(pt)
    if not kept:
        return ""
    return "M" + "L".join(f"{x},{y}" for x, y in kept)


def _duration_axis(hi: float) -> tuple[float, str]:
    """A unit that suits durations up to *hi* seconds: (scale, suffix)."""
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if hi >= scale:
            return scale, unit
    return 1e-9, "ns"


def _dur_fmt(hi: float) -> Callable[[float], str]:
    scale, unit = _duration_axis(hi)
    return lambda v: f"{v / scale:.3g} {unit}"


def _budget_lines(b: BenchmarkResult, names: set[str]) -> list[tuple[float, str]]:
    """(limit, label) of the budgets of *b* on the metrics *names*."""
    lines = []
    for v in b.budgets:
        if v.get("metric") in names and isinstance(v.get("limit"), (int, float)):
            word = "MISSED" if v.get("verdict") == MISSED else "met" if v.get("verdict") == MET \
                else "not measured"
            bound = "<=" if v.get("bound") == "max" else ">="
            lines.append((float(v["limit"]),
                          f"SLO {v.get('keyword')} {bound} {v.get('limit_text', v['limit'])} ({word})"))
    return lines


def _time_plot(b: BenchmarkResult) -> str:
    """Per-call time: a histogram of the saved rounds, else a box of the quantiles."""
    times = _round_times(b)
    marks = _percentiles(b, times)
    budgets = _budget_lines(b, {"p50", "p95", "p99", "mean", "max"})
    if times:
        ordered = sorted(times)
        lo, hi = ordered[0], ordered[-1]
        # The axis ends at Tukey's far-out fence (the upper quartile plus three interquartile
        # ranges) or a marked value beyond it: a few slow rounds must not squeeze the rest into
        # one bar. Rounds past it are counted in a note under the plot.
        q1, q3 = _nearest_rank(ordered, 25), _nearest_rank(ordered, 75)
        xhi = max([min(hi, q3 + 3 * (q3 - q1))] + [v for _, v in marks])
        xlo = min([lo] + [v for _, v in marks])
        beyond = sum(1 for t in times if t > xhi)
        if xhi <= xlo:  # every round took the same time: one bar in the middle
            pad = xlo * 0.05 or 1e-9
            xlo, xhi = xlo - pad, xhi + pad
        width = (xhi - xlo) / HISTOGRAM_BINS
        counts = [0] * HISTOGRAM_BINS
        for t in times:
            if t <= xhi:
                counts[min(HISTOGRAM_BINS - 1, int((t - xlo) / width))] += 1
        top = max(counts)
        plot = _Plot(f"Time per call: {len(times)} rounds", xlo, xlo + width * HISTOGRAM_BINS, 0,
                     top * 1.05, _dur_fmt(xhi), lambda v: f"{v:.0f}", "time-histogram", "rounds")
        plot.axes()
        for i, c in enumerate(counts):
            if c:
                x0, x1 = plot.x(xlo + i * width), plot.x(xlo + (i + 1) * width)
                plot.parts.append(f'<rect class="bar" x="{x0:.1f}" y="{plot.y(c):.1f}" '
                                  f'width="{max(0.5, x1 - x0 - 1):.1f}" height="{plot.y(0) - plot.y(c):.1f}">'
                                  f'<title>{c} rounds</title></rect>')
        desc = (f"Histogram of the time per call of {len(times)} rounds, from "
                f"{format_duration(lo)} to {format_duration(hi)}")
        if beyond:
            plot.notes.append(("beyond", f"{beyond} round{'s' if beyond != 1 else ''} from "
                               f"{format_duration(min(t for t in times if t > xhi))} to "
                               f"{format_duration(hi)}: \u2192 right of the axis"))
    else:
        quant = [(k, _stat(b, k)) for k in ("min", "q1", "median", "q3", "max")]
        have = {k: v for k, v in quant if v is not None}
        values = list(have.values()) + [v for _, v in marks]
        if not values:
            return ""
        xlo, xhi = min(values), max(values)
        pad = (xhi - xlo) * 0.05 or xhi * 0.05 or 1e-9
        plot = _Plot("Time per call: quantiles (the run saved no rounds)", max(0.0, xlo - pad),
                     xhi + pad, 0, 1, _dur_fmt(xhi), lambda v: "", "time-quantiles")
        plot.axes()
        ymid = plot.y(0.5)
        if "min" in have and "max" in have:
            plot.parts.append(f'<line class="whisker" x1="{plot.x(have["min"]):.1f}" y1="{ymid:.0f}" '
                              f'x2="{plot.x(have["max"]):.1f}" y2="{ymid:.0f}"/>')
        if "q1" in have and "q3" in have:
            x0, x1 = plot.x(have["q1"]), plot.x(have["q3"])
            plot.parts.append(f'<rect class="box" x="{x0:.1f}" y="{ymid - 20:.0f}" '
                              f'width="{max(1.0, x1 - x0):.1f}" height="40"><title>middle half of the '
                              f'rounds: {_e(format_duration(have["q1"]))} to '
                              f'{_e(format_duration(have["q3"]))}</title></rect>')
        desc = "Box of the time per call: " + ", ".join(
            f"{k} {format_duration(v)}" for k, v in have.items())
    for name, value in marks:
        plot.vmark(value, f"{name} {format_duration(value)}", f"pct {name}")
    for limit, label in budgets:
        plot.vmark(limit, label, "budget")
    return plot.svg(desc)


def _rss_plot(b: BenchmarkResult) -> str:
    timeline = b.record.get("rss_timeline")
    if not isinstance(timeline, dict):
        return ""
    ts, rss = timeline.get("t_s"), timeline.get("rss_bytes")
    if not isinstance(ts, list) or not isinstance(rss, list):
        return ""
    points = [(float(t), float(r)) for t, r in zip(ts, rss)
              if isinstance(t, (int, float)) and isinstance(r, (int, float))
              and not isinstance(t, bool) and not isinstance(r, bool)]
    if len(points) < 2:
        return ""
    start = points[0][1]
    lines = []
    for limit, label in _budget_lines(b, {"peak_rss"}):  # the test's own peak: above the start
        lines.append((start + limit, f"{label}: RSS {format_bytes(start + limit)}"))
    for limit, label in _budget_lines(b, {"process_peak_rss"}):
        lines.append((limit, label))
    lo = min(min(r for _, r in points), *(v for v, _ in lines)) if lines else min(r for _, r in points)
    hi = max(max(r for _, r in points), *(v for v, _ in lines)) if lines else max(r for _, r in points)
    pad = (hi - lo) * 0.05 or hi * 0.01 or 1.0
    tmax = points[-1][0]
    plot = _Plot(f"RSS over the run: {len(points)} points", 0.0, tmax or 1e-3, lo - pad, hi + pad,
                 _dur_fmt(tmax or 1e-3), lambda v: format_bytes(v, 3), "rss-timeline")
    plot.axes()
    plot.parts.append(f'<path class="line" d="{_polyline((plot.x(t), plot.y(r)) for t, r in points)}"/>')
    peak = max(points, key=lambda p: p[1])
    plot.parts.append(f'<circle class="dot" cx="{plot.x(peak[0]):.1f}" cy="{plot.y(peak[1]):.1f}" r="3">'
                      f'<title>peak {_e(format_bytes(peak[1]))}</title></circle>')
    plot.vmark(peak[0], f"peak {format_bytes(peak[1] - start)} above start", "pct peak")
    for value, label in lines:
        plot.hmark(value, label, "budget")
    return plot.svg(f"RSS from {format_bytes(start)} at the start to a peak of "
                    f"{format_bytes(peak[1])}, over {format_duration(tmax)}")


def _load_plot(b: BenchmarkResult) -> str:
    """A load's latency distribution, from its 101 saved percentiles (0, 1, ..., 100)."""
    quantiles = b.record.get("load_latency_quantiles_s")
    if not isinstance(quantiles, list) or len(quantiles) != 101 or any(
            number_problem(q) is not None for q in quantiles):
        return ""
    q = [float(v) for v in quantiles]
    budgets = _budget_lines(b, {"p50", "p95", "p99", "mean", "max"})
    xlo, xhi = q[0], q[-1]
    if xhi <= xlo:
        xhi = xlo * 1.1 or 1e-6
    bins = HISTOGRAM_BINS
    width = (xhi - xlo) / bins

    def cdf(x: float) -> float:  # share of tasks at or below x, linear between percentiles
        if x <= q[0]:
            return 0.0
        if x >= q[-1]:
            return 1.0
        for i in range(100):
            if q[i] <= x <= q[i + 1]:
                span = q[i + 1] - q[i]
                return (i + ((x - q[i]) / span if span > 0 else 1.0)) / 100.0
        return 1.0

    shares = [cdf(xlo + (i + 1) * width) - cdf(xlo + i * width) for i in range(bins)]
    if q[-1] == q[0]:
        shares = [1.0] + [0.0] * (bins - 1)
    top = max(shares) or 1.0
    plot = _Plot("Load: task latency", xlo, xhi, 0, top * 1.05, _dur_fmt(xhi),
                 lambda v: f"{v * 100:.0f}%", "load-histogram", "tasks")
    plot.axes()
    for i, s in enumerate(shares):
        if s > 0:
            x0, x1 = plot.x(xlo + i * width), plot.x(xlo + (i + 1) * width)
            plot.parts.append(f'<rect class="bar" x="{x0:.1f}" y="{plot.y(s):.1f}" '
                              f'width="{max(0.5, x1 - x0 - 1):.1f}" height="{plot.y(0) - plot.y(s):.1f}">'
                              f'<title>{s * 100:.1f}% of tasks</title></rect>')
    for name, p in (("p50", 50), ("p95", 95), ("p99", 99)):
        value = _record_number({k: v for k, v in b.record.items() if k.startswith("latency_")}, name)
        value = q[p] if value is None else value
        plot.vmark(value, f"{name} {format_duration(value)}", f"pct {name}")
    for limit, label in budgets:
        plot.vmark(limit, label, "budget")
    return plot.svg(f"Histogram of task latency over the load, {format_duration(q[0])} to "
                    f"{format_duration(q[-1])}")


# ---- trends -------------------------------------------------------------------------------------


def _run_label(run: Run, index: int) -> str:
    commit = str(run.commit.get("id") or "")[:7]
    date = _date(run.datetime)[5:16] if run.datetime else ""
    return " ".join(p for p in (date, commit) if p) or f"run {index + 1}"


def _trend_plot(history: Sequence[BenchmarkResult | None], key: str, runs: Sequence[Run],
                labels: Sequence[str], marks: Mapping[int, Change],
                budgets: Sequence[tuple[float, str]]) -> str:
    """*history*: the benchmark in each run (None where a run lacks it)."""
    points = []
    for i, bench in enumerate(history):
        if bench is None:
            continue
        value = numeric_metrics(bench.record).get(key)
        if value is None and key in ("mean_s", "median_s"):
            value = _stat(bench, "mean" if key == "mean_s" else "median")
        if value is not None:
            points.append((i, value))
    if len(points) < 2:
        return ""
    values = [v for _, v in points] + [v for v, _ in budgets]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.1 or abs(hi) * 0.1 or 1.0
    def fmt(v: float) -> str:
        return _format_key(key, v)

    plot = _Plot(f"{key} across {len(runs)} runs (x: run number)", -0.5, len(runs) - 0.5,
                 min(lo - pad, 0.0) if lo >= 0 and lo - pad < 0 else lo - pad, hi + pad,
                 str, fmt, "trend")
    step = max(1, math.ceil(len(runs) / 10))
    plot.axes([(i, str(i + 1)) for i in range(0, len(runs), step)])  # run numbers: see the legend
    plot.parts.append(f'<path class="line" d="{_polyline((plot.x(i), plot.y(v)) for i, v in points)}"/>')
    for i, v in points:
        change = marks.get(i)
        text = f"{labels[i]}: {fmt(v)}"
        if change is None:
            plot.parts.append(f'<circle class="dot" cx="{plot.x(i):.0f}" cy="{plot.y(v):.0f}" r="3">'
                              f'<title>{_e(fmt(v))}</title></circle>')
            continue
        word = "regressed" if change.verdict == "regressed" else "improved"
        pct = "from 0" if change.change_percent is None else f"{change.change_percent:+.1f}%"
        symbol = "\u25b2" if word == "regressed" else "\u25bd"
        plot.parts.append(
            f'<g class="{word}"><title>{_e(text)}, {word} {pct} ({_e(change.gate)})</title>'
            f'<text x="{plot.x(i):.1f}" y="{plot.y(v) + 5:.1f}" text-anchor="middle" class="sym">'
            f'{symbol}</text><text x="{plot.x(i):.1f}" y="{plot.y(v) - 9:.1f}" '
            f'text-anchor="middle">{word} {pct}</text></g>')
    for limit, label in budgets:
        plot.hmark(limit, label, "budget")
    return plot.svg(f"{key} of each run" + "".join(
        f"; {labels[i]}: {c.verdict}" for i, c in sorted(marks.items())))


# ---- the page -----------------------------------------------------------------------------------

_STYLE = """
:root{--fg:#1b1b1b;--muted:#555;--line:#c8c8c8;--bad:#a40000;--good:#1d5e20;--accent:#1f4e9a}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);margin:0;
 padding:1rem;max-width:1240px;margin:auto}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.2rem;margin:1.6rem 0 .4rem}
h3{font-size:1rem;margin:1rem 0 .3rem}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em;word-break:break-all}
.meta{list-style:none;padding:0;margin:.3rem 0;color:var(--muted)}
.counts{font-weight:600}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid var(--line);padding:.3rem .4rem;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left;white-space:normal}
td.text,th.text{text-align:left}
th button{font:inherit;font-weight:600;background:none;border:0;padding:0;cursor:pointer;color:inherit}
th button::after{content:" \\2195";color:var(--muted)}
th[aria-sort=ascending] button::after{content:" \\25B2"}
th[aria-sort=descending] button::after{content:" \\25BC"}
.bad{color:var(--bad);font-weight:700}.good{color:var(--good)}
section.bench{border-top:2px solid var(--line);margin-top:1.5rem}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:1rem}
figure{margin:0}figcaption{font-weight:600;font-size:.9rem}
svg{width:100%;height:auto;display:block}
svg text{font:12px system-ui,sans-serif;fill:var(--fg)}
svg .tk{fill:var(--muted)}svg .e{text-anchor:end}svg .m{text-anchor:middle}
svg path{fill:none}svg .ax{stroke:#777}svg .grid{stroke:#e4e4e4}
svg .bar{fill:#8fa9d6;stroke:#3d5f9c}
svg .box{fill:#c9d6ee;stroke:#3d5f9c}svg .whisker{stroke:#3d5f9c;stroke-width:2}
svg .line{fill:none;stroke:var(--accent);stroke-width:1.6}
svg .dot{fill:var(--accent)}
svg .pct line{stroke:#222;stroke-width:1.2}
svg .pct.p95 line{stroke-dasharray:6 3}svg .pct.p99 line{stroke-dasharray:2 2}
svg .budget line{stroke:var(--bad);stroke-width:1.6;stroke-dasharray:10 4}
svg .budget text{fill:var(--bad)}
svg .regressed text{fill:var(--bad);font-weight:700}svg .improved text{fill:var(--good)}
svg .sym{font-size:14px}
ul.verdicts{padding-left:1.2rem}
p.note{margin:.1rem 0;font-size:.85rem}p.note.budget{color:var(--bad)}
@media (max-width:600px){body{padding:.5rem;font-size:14px}th,td{padding:.25rem .35rem}
 .plots{grid-template-columns:1fr}}
"""

#: Sorts a table by the column whose header button is clicked (numbers by data-v, missing last),
#: and on load by ``#sort=COLUMN`` or ``#sort=-COLUMN`` in the address.
_SCRIPT = """
(function(){
function sortBy(table,index,asc){
 var heads=table.tHead.rows[0].cells,body=table.tBodies[0];
 for(var i=0;i<heads.length;i++)heads[i].removeAttribute('aria-sort');
 heads[index].setAttribute('aria-sort',asc?'ascending':'descending');
 var rows=Array.prototype.slice.call(body.rows);
 rows.sort(function(a,b){
  var x=a.cells[index].getAttribute('data-v'),y=b.cells[index].getAttribute('data-v');
  if(x===null||x==='')return (y===null||y==='')?0:1;if(y===null||y==='')return -1;
  var nx=parseFloat(x),ny=parseFloat(y),c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);
  return asc?c:-c;});
 rows.forEach(function(r){body.appendChild(r);});
}
var tables=document.querySelectorAll('table.sortable');
Array.prototype.forEach.call(tables,function(table){
 Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,index){
  var button=th.querySelector('button');if(!button)return;
  button.addEventListener('click',function(){sortBy(table,index,th.getAttribute('aria-sort')!=='ascending');});
 });
});
var m=/^#sort=(-?)([\\w-]+)$/.exec(location.hash);
if(m&&tables.length){var th=tables[0].querySelector('th[data-col="'+m[2]+'"]');
 if(th)sortBy(tables[0],th.cellIndex,m[1]!=='-');}
})();
"""


def _verdict_cells(b: BenchmarkResult, changes: Sequence[Change] | None) -> list[str]:
    cells = []
    met = sum(1 for v in b.budgets if v.get("verdict") == MET)
    missed = len(b.budgets) - met
    if b.budgets:
        text = (f'<span class="bad">\u2717 {missed} MISSED</span>' if missed else "") + \
            (", " if missed and met else "") + (f"\u2713 {met} MET" if met else "")
        cells.append(f'<td class="text" data-v="{missed}">{text}</td>')
    else:
        cells.append('<td class="text" data-v="">-</td>')
    failed = sum(1 for v in b.gates if v.get("verdict") == FAILED)
    if b.gates:
        passed = len(b.gates) - failed
        text = (f'<span class="bad">\u2717 {failed} FAILED</span>' if failed else "") + \
            (", " if failed and passed else "") + (f"\u2713 {passed} passed" if passed else "")
        cells.append(f'<td class="text" data-v="{failed}">{text}</td>')
    else:
        cells.append('<td class="text" data-v="">-</td>')
    if changes is not None:
        mine = [c for c in changes if c.test == b.fullname]
        worse = sum(1 for c in mine if c.verdict == "regressed")
        better = len(mine) - worse
        parts = []
        if worse:
            parts.append(f'<span class="bad">\u25b2 {worse} regressed</span>')
        if better:
            parts.append(f'<span class="good">\u25bd {better} improved</span>')
        cells.append(f'<td class="text" data-v="{worse}">{", ".join(parts) or "no change"}</td>')
    return cells


def _summary(run: Run, names: Mapping[str, str], changes: Sequence[Change] | None) -> list[str]:
    values = [[b.value(m) for _, m in _SUMMARY_COLUMNS] for b in run.benchmarks]
    shown = [i for i in range(len(_SUMMARY_COLUMNS)) if any(row[i] is not None for row in values)]
    head = ['<th data-col="benchmark"><button type="button">Benchmark</button></th>']
    head += [f'<th data-col="{_SUMMARY_COLUMNS[i][1]}"><button type="button">'
             f'{_e(_SUMMARY_COLUMNS[i][0])}</button></th>' for i in shown]
    head += ['<th class="text" data-col="budgets"><button type="button">SLO budgets</button></th>',
             '<th class="text" data-col="gates"><button type="button">Gates</button></th>']
    if changes is not None:
        head.append('<th class="text" data-col="baseline"><button type="button">'
                    'vs baseline</button></th>')
    rows = []
    for n, (b, row) in enumerate(zip(run.benchmarks, values)):
        cells = [f'<td data-v="{_e(names[b.fullname])}"><a href="#b{n}"><code>'
                 f'{_e(names[b.fullname])}</code></a></td>']
        for i in shown:
            v = row[i]
            name = _SUMMARY_COLUMNS[i][1]
            text = "-" if v is None else (f"{v:.0f}%" if name == "cpu_percent" else METRICS[name].format(v))
            cells.append(f'<td data-v="{"" if v is None else repr(v)}">{_e(text)}</td>')
        cells += _verdict_cells(b, changes)
        rows.append(f'<tr data-bench="{_e(b.fullname)}">{"".join(cells)}</tr>')
    return ['<section id="summary"><h2>Summary</h2>',
            '<p>Click a column header to sort by it.</p><div class="scroll">'
            '<table class="sortable" id="summary-table"><thead><tr>' + "".join(head) +
            '</tr></thead><tbody>', *rows, "</tbody></table></div></section>"]


def _metrics_table(b: BenchmarkResult) -> str:
    found = numeric_metrics(b.record)
    if not found:
        return ""
    rows = "".join(f'<tr><td><code>{_e(k)}</code></td><td>{_e(_format_key(k, v))}</td></tr>'
                   for k, v in found.items())
    return (f'<details><summary>All {len(found)} metrics of the record</summary><div class="scroll">'
            f'<table class="metrics"><thead><tr><th>metric</th><th>value</th></tr></thead>'
            f'<tbody>{rows}</tbody></table></div></details>')


def _custom_metrics(b: BenchmarkResult) -> str:
    """The numbers of the record that are not this software's own: tokens, cost, custom ones."""
    found = {k: v for k, v in numeric_metrics(b.record).items()
             if k not in _KEY_METRIC and not k.startswith(("rss_", "cpu_", "wall_", "latency_",
                                                           "process_", "peak_", "load_"))
             and k not in ("completed", "failed", "achieved_concurrency", "items_per_call",
                           "bytes_per_call", "allocs_per_call")}
    if not found:
        return ""
    items = "".join(f"<li><code>{_e(k)}</code>: {_e(_format_key(k, v))}</li>"
                    for k, v in found.items())
    return f'<div class="custom"><h3>Other metrics</h3><ul>{items}</ul></div>'


def _verdict_list(b: BenchmarkResult) -> str:
    items = []
    for v in b.budgets:
        verdict = v.get("verdict")
        label = {MET: "\u2713 MET", MISSED: "\u2717 MISSED"}.get(verdict, "\u2717 NOT MEASURED")
        cls = "" if verdict == MET else ' class="bad"'
        value = v.get("value")
        name = str(v.get("metric", ""))
        measured = (METRICS[name].format(value) if name in METRICS and isinstance(value, (int, float))
                    and not isinstance(value, bool) else "-")
        bound = "at most" if v.get("bound") == "max" else "at least"
        items.append(f"<li><span{cls}>{label}</span> SLO <code>{_e(v.get('keyword'))}</code>: "
                     f"{bound} {_e(v.get('limit_text', v.get('limit')))}, measured {_e(measured)}</li>")
    for v in b.gates:
        failed = v.get("verdict") == FAILED
        label = '<span class="bad">\u2717 FAILED</span>' if failed else "\u2713 passed"
        pct = v.get("change_percent")
        change = "from 0" if not isinstance(pct, (int, float)) else f"{pct:+.1f}%"
        items.append(f"<li>{label} gate <code>{_e(v.get('gate'))}</code>: {_e(change)} against "
                     f"<code>{_e(v.get('against') or 'the baseline')}</code></li>")
    return f'<ul class="verdicts">{"".join(items)}</ul>' if items else ""


def _before_after(b: BenchmarkResult, base: BenchmarkResult | None,
                  changes: Sequence[Change]) -> str:
    if base is None:
        return '<p class="before-after">Not in the baseline run.</p>'
    now, before = numeric_metrics(b.record), numeric_metrics(base.record)
    if not b.record and not base.record:
        now = {k: v for k, v in (("mean", _stat(b, "mean")), ("median", _stat(b, "median"))) if v is not None}
        before = {k: v for k, v in (("mean", _stat(base, "mean")), ("median", _stat(base, "median")))
                  if v is not None}
    by_key = {}
    for c in changes:
        if c.test == b.fullname:
            by_key[c.gate.metric.name] = c
    rows = []
    for key in now:
        if key not in before:
            continue
        metric_obj = _KEY_METRIC.get(key)
        change = by_key.get(metric_obj.name) if metric_obj is not None else None
        if change is not None and change.verdict == "regressed":
            verdict = '<span class="bad">\u25b2 regressed</span>'
        elif change is not None:
            verdict = '<span class="good">\u25bd improved</span>'
        else:
            verdict = ""
        pct = ("from 0" if before[key] == 0 else f"{(now[key] - before[key]) / abs(before[key]) * 100:+.1f}%")
        hi = max(abs(now[key]), abs(before[key])) or 1.0
        bars = (f'<svg viewBox="0 0 100 14" class="pair" role="img" aria-label="before and now">'
                f'<rect x="0" y="1" width="{abs(before[key]) / hi * 100:.1f}" height="5" fill="#999">'
                f'<title>before</title></rect><rect x="0" y="8" width="{abs(now[key]) / hi * 100:.1f}" '
                f'height="5" fill="#3d5f9c"><title>now</title></rect></svg>')
        rows.append(f'<tr><td><code>{_e(key)}</code></td><td>{_e(_format_key(key, before[key]))}</td>'
                    f'<td>{_e(_format_key(key, now[key]))}</td><td>{_e(pct)}</td>'
                    f'<td style="min-width:90px">{bars}</td><td class="text">{verdict}</td></tr>')
    if not rows:
        return ""
    return ('<div class="before-after"><h3>Before and after (baseline, now)</h3><div class="scroll">'
            '<table><thead><tr><th>metric</th><th>baseline</th><th>now</th><th>change</th>'
            '<th>bars: baseline (grey, top), now (bottom)</th><th class="text">verdict</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div></div>')


def _trend_keys(history: Sequence[BenchmarkResult | None]) -> list[str]:
    """The numeric keys of the benchmark in at least two runs, known metrics first."""
    seen: dict[str, int] = {}
    for bench in history:
        if bench is None:
            continue
        keys = set(numeric_metrics(bench.record))
        if not bench.record:
            keys |= {k for k, s in (("mean_s", "mean"), ("median_s", "median"))
                     if _stat(bench, s) is not None}
        for key in keys:
            seen[key] = seen.get(key, 0) + 1
    keep = [k for k, n in seen.items() if n >= 2 and k not in ("completed", "failed", "cpu_time_s",
                                                               "wall_time_s", "process_peak_rss_bytes")]
    known_order = [k for m in METRICS.values() for k in m.keys]
    return sorted(keep, key=lambda k: (known_order.index(k) if k in known_order else len(known_order), k))


def render_html(runs: Sequence[Run], baseline: Run | None = None,
                changes: Sequence[Change] | None = None, compare: Compare | None = None,
                title: str = "Performance test report") -> str:
    """The report of ``runs[-1]`` as one self-contained HTML page.

    Earlier *runs* (oldest first) give the trend charts; *compare* (now, before) -> changes marks
    the regressions and improvements between consecutive runs on them. *changes* against
    *baseline* (from the same *compare*, or
    :func:`pyagentbench.results.verdicts.baseline_changes`) fill the summary's baseline column
    and each benchmark's before/after view.
    """
    if not runs:
        raise ValueError("render_html needs at least one run")
    run = runs[-1]
    names = _display_names(run)
    labels = [_run_label(r, i) for i, r in enumerate(runs)]
    step_changes: dict[int, Sequence[Change]] = {}
    if compare is not None:
        for i in range(1, len(runs)):
            step_changes[i] = compare(runs[i], runs[i - 1])
    out = ["<!DOCTYPE html>", HTML_MARKER, '<html lang="en"><head><meta charset="utf-8">',
           f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
           f"<header><h1>{_e(title)}</h1><ul class=\"meta\">", f"<li>Run: <code>{_e(run.source)}</code></li>"]
    if run.datetime:
        out.append(f"<li>Date: {_e(_date(run.datetime))}</li>")
    if run.commit.get("id"):
        dirty = " (with uncommitted changes)" if run.commit.get("dirty") else ""
        out.append(f"<li>Commit: <code>{_e(str(run.commit['id'])[:12])}</code>{dirty}</li>")
    machine = _machine(run.machine)
    if machine:
        out.append(f"<li>Machine: {_e(machine)}</li>")
    if len(runs) > 1:
        legend = "".join(f"<li>{i + 1}: {_e(labels[i])} <code>{_e(r.source)}</code></li>"
                         for i, r in enumerate(runs))
        out.append(f'<li>Trends over {len(runs)} runs, oldest first:<ol class="runs">{legend}</ol></li>')
    if baseline is not None:
        out.append(f"<li>Baseline: <code>{_e(baseline.source)}</code></li>")
    out.append("</ul>")
    budgets = [v for b in run.benchmarks for v in b.budgets]
    gates = [v for b in run.benchmarks for v in b.gates]
    counts = [f"{len(run.benchmarks)} benchmark{'s' if len(run.benchmarks) != 1 else ''}"]
    if budgets:
        met = sum(1 for v in budgets if v.get("verdict") == MET)
        counts.append(f"SLO budgets: {met} met, {len(budgets) - met} missed")
    if gates:
        failed = sum(1 for v in gates if v.get("verdict") == FAILED)
        counts.append(f"regression gates: {len(gates) - failed} passed, {failed} failed")
    if changes is not None:
        worse = sum(1 for c in changes if c.verdict == "regressed")
        counts.append(f"against the baseline: {worse} regressed, {len(changes) - worse} improved")
    dot = " \u00b7 "
    out.append(f'<p class="counts">{dot.join(_e(c) for c in counts)}</p></header><main>')
    if not run.benchmarks:
        out.append("<p>The run holds no benchmarks.</p></main></body></html>")
        return "\n".join(out) + "\n"
    out += _summary(run, names, changes)
    base_by_name = {b.fullname: b for b in baseline.benchmarks} if baseline is not None else {}
    by_run = [{bench.fullname: bench for bench in r.benchmarks} for r in runs]
    for n, b in enumerate(run.benchmarks):
        out.append(f'<section class="bench" id="b{n}" data-bench="{_e(b.fullname)}">'
                   f'<h2><code>{_e(names[b.fullname])}</code></h2>')
        if names[b.fullname] != b.fullname:
            out.append(f'<p><code>{_e(b.fullname)}</code></p>')
        if b.params:
            params = ", ".join(f"{k}={v!r}" for k, v in b.params.items())
            out.append(f"<p>Params: <code>{_e(params)}</code></p>")
        out.append(_verdict_list(b))
        plots = [p for p in (_time_plot(b), _rss_plot(b), _load_plot(b)) if p]
        if plots:
            out.append('<div class="plots">' + "".join(plots) + "</div>")
        out.append(_custom_metrics(b))
        if baseline is not None:
            out.append(_before_after(b, base_by_name.get(b.fullname), changes or ()))
        if len(runs) > 1:
            trend_plots = []
            history = [found.get(b.fullname) for found in by_run]
            for key in _trend_keys(history):
                m = _KEY_METRIC.get(key)
                marks = {}
                for i, found in step_changes.items():
                    for c in found:
                        if c.test == b.fullname and m is not None and c.gate.metric.name == m.name:
                            marks[i] = c
                limit_lines = _budget_lines(b, {m.name}) if m is not None else []
                trend_plots.append(_trend_plot(history, key, runs, labels, marks, limit_lines))
            trend_plots = [p for p in trend_plots if p]
            if trend_plots:
                out.append(f'<details class="trends" open><summary>Trends across {len(runs)} runs '
                           f'({len(trend_plots)} metrics)</summary><div class="plots">'
                           + "".join(trend_plots) + "</div></details>")
        out.append(_metrics_table(b))
        out.append("</section>")
    out.append(f"</main><script>{_SCRIPT}</script></body></html>")
    return "\n".join(p for p in out if p) + "\n"
