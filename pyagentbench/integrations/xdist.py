"""Benchmarks under pytest-xdist (``--agentbench-xdist``): timed on workers, one core each, and
reported by the controller as one serial run would be.

pytest-benchmark turns itself off under xdist. With ``--agentbench-xdist`` it stays on:

- each worker pins itself to one CPU of those the run may use (``os.sched_setaffinity``), worker
  ``gwN`` to the N-th; with more workers than CPUs, two workers share a CPU and every benchmark is
  marked ``oversubscribed`` (in the table and in the saved JSON) because its times are not sound;
- a worker saves nothing and compares with nothing: it sends each benchmark (pytest-benchmark's
  own dict, data included) and each agent_benchmark record to the controller through xdist's
  ``workeroutput`` channel;
- the controller adds them to pytest-benchmark's session, which writes ONE JSON, prints one table
  and checks ``--benchmark-compare-fail``; our gates, table and reports read the merged records.

pytest-benchmark decides to turn itself off in its session's constructor; the constructor is
wrapped (:func:`keep_benchmarks_on`) so that it does not see xdist, and only that.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable

import pytest

#: workeroutput keys: what a worker hands its controller.
BENCHMARKS_KEY = "agentbench_benchmarks"
RECORDS_KEY = "agentbench_records"
PLACEMENT_KEY = "agentbench_placement"

OPTION = "agentbench_xdist"
#: The key, in each benchmark's ``extra_info`` in the saved JSON, of where a worker timed it.
XDIST_INFO_KEY = "agentbench_xdist"


def enabled(config: pytest.Config) -> bool:
    """True when ``--agentbench-xdist`` asks for benchmarks under xdist."""
    return bool(config.getoption(OPTION, False))


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def check_usable(config: pytest.Config) -> None:
    """``--agentbench-xdist`` needs pytest-xdist; say so instead of doing nothing."""
    if not enabled(config):
        return
    if not config.pluginmanager.hasplugin("xdist"):
        raise pytest.UsageError("--agentbench-xdist runs benchmarks under pytest-xdist, which is not "
                                "installed or is disabled (-p no:xdist): pip install pytest-xdist")


def keep_benchmarks_on(config: pytest.Config) -> None:
    """Make pytest-benchmark's next session (made in its pytest_configure, after ours) ignore xdist.

    Its constructor reads the ``dist`` option and ``PYTEST_XDIST_WORKER`` to turn benchmarks off
    (and rejects ``--benchmark-only`` with them). For that constructor only, the option reads
    "no" and the variable is unset; both are restored when it returns, and so is the class.
    """
    if not enabled(config):
        return
    import pytest_benchmark.plugin as benchmark_plugin

    original = benchmark_plugin.BenchmarkSession

    class XdistBenchmarkSession(original):  # type: ignore[misc, valid-type]
        def __init__(self, config: pytest.Config) -> None:
            benchmark_plugin.BenchmarkSession = original  # one session only
            dist = getattr(config.option, "dist", "no")
            worker = os.environ.pop("PYTEST_XDIST_WORKER", None)
            config.option.dist = "no"
            try:
                super().__init__(config)
            finally:
                config.option.dist = dist
                if worker is not None:
                    os.environ["PYTEST_XDIST_WORKER"] = worker
            if is_worker(config):
                # The controller saves, compares and prints; a worker only times.
                self.save = self.autosave = self.json = None
                self.compare = self.compare_fail = None
                self.compared_mapping = {}
                self.histogram = False

    benchmark_plugin.BenchmarkSession = XdistBenchmarkSession
    config.add_cleanup(lambda: setattr(benchmark_plugin, "BenchmarkSession", original))


class Placement:
    """Where one worker times: its CPU, and whether it shares it with another worker."""

    def __init__(self, worker: str, cpu: int | None, workers: int, cpus: list[int]) -> None:
        self.worker = worker
        self.cpu = cpu
        self.workers = workers
        self.cpus = cpus

    @property
    def oversubscribed(self) -> bool:
        return self.workers > len(self.cpus)

    def as_dict(self) -> dict[str, Any]:
        return {"worker": self.worker, "cpu": self.cpu, "workers": self.workers,
                "cpus": len(self.cpus), "oversubscribed": self.oversubscribed}


def pin_worker(config: pytest.Config) -> Placement | None:
    """On a worker: pin this process to its own CPU; None elsewhere or when off."""
    if not (enabled(config) and is_worker(config)):
        return None
    workerinput = config.workerinput  # type: ignore[attr-defined]
    worker = str(workerinput.get("workerid", "gw0"))
    workers = int(workerinput.get("workercount", 1))
    try:
        index = int(worker[2:]) if worker.startswith("gw") else 0
    except ValueError:
        index = 0
    if not hasattr(os, "sched_setaffinity"):  # not Linux: say that nothing is pinned
        return Placement(worker, None, workers, list(range(os.cpu_count() or 1)))
    cpus = sorted(os.sched_getaffinity(0))
    cpu = cpus[index % len(cpus)]
    os.sched_setaffinity(0, {cpu})
    return Placement(worker, cpu, workers, cpus)


def _plain(value: Any) -> Any:
    """*value* as the plain types execnet carries (what JSON would keep of it)."""
    return json.loads(json.dumps(value, default=repr, allow_nan=True))


def worker_output(config: pytest.Config, records: dict[str, dict[str, Any]],
                  placement: Placement | None) -> None:
    """On a worker at session end: hand the benchmarks and records to the controller."""
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is None or not enabled(config):
        return
    bs = getattr(config, "_benchmarksession", None)
    benchmarks = []
    for bench in getattr(bs, "benchmarks", []) or []:
        if not bench or bench.has_error:
            continue
        entry = bench.as_dict(include_data=True)
        if placement is not None:
            entry.setdefault("extra_info", {})[XDIST_INFO_KEY] = placement.as_dict()
        benchmarks.append(entry)
    workeroutput[BENCHMARKS_KEY] = _plain(benchmarks)
    workeroutput[RECORDS_KEY] = _plain(records)
    workeroutput[PLACEMENT_KEY] = _plain(placement.as_dict() if placement else None)


class _Stats:
    """A worker's stats dict read as attributes, like pytest-benchmark's ``Stats``."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "data"}


class WorkerBenchmark:
    """A benchmark a worker timed, as pytest-benchmark's session on the controller uses one.

    pytest-benchmark's session reads its benchmarks through ``as_dict()``, ``has_error``,
    ``fullname``, ``cprofile_stats`` and ``bench[stat]``, and conftest hooks read
    ``bench.stats.median`` and ``bench.extra_info``; this holds the worker's ``as_dict()``
    (with its data) and answers those.
    """

    has_error = False
    cprofile_stats = None

    def __init__(self, entry: dict[str, Any]) -> None:
        self._entry = entry
        self._stats: dict[str, Any] = dict(entry.get("stats") or {})
        for key in ("group", "name", "fullname", "params", "param", "extra_info", "options"):
            setattr(self, key, entry.get(key))
        self.iterations = self._stats.get("iterations", 1)

    @property
    def stats(self) -> Any:
        """The stats as attributes (``bench.stats.median``), as on pytest-benchmark's own records."""
        return _Stats(self._stats)

    def __bool__(self) -> bool:
        return True

    def __getitem__(self, key: str) -> Any:
        return self._stats[key]

    def as_dict(self, include_data: bool = True, flat: bool = False, stats: bool = True,
                cprofile: Any = None) -> dict[str, Any]:
        result = {key: value for key, value in self._entry.items() if key != "stats"}
        if stats:
            values = dict(self._stats)
            if not include_data:
                values.pop("data", None)
            if flat:
                result.update(values)
            else:
                result["stats"] = values
        return result


class Controller:
    """What the controller gathers from its workers."""

    def __init__(self) -> None:
        self.placements: list[dict[str, Any]] = []

    def node_down(self, config: pytest.Config, node: Any, records: dict[str, dict[str, Any]]) -> None:
        """A worker finished: its benchmarks join pytest-benchmark's session, its records ours."""
        output = getattr(node, "workeroutput", None) or {}
        if not enabled(config) or BENCHMARKS_KEY not in output:
            return
        bs = getattr(config, "_benchmarksession", None)
        if bs is not None:
            bs.benchmarks.extend(WorkerBenchmark(entry) for entry in output[BENCHMARKS_KEY])
            bs.benchmarks.sort(key=lambda bench: bench.fullname or "")
        records.update(output.get(RECORDS_KEY) or {})
        ordered = sorted(records.items())
        records.clear()
        records.update(ordered)
        if output.get(PLACEMENT_KEY):
            self.placements.append(output[PLACEMENT_KEY])

    def summary_lines(self) -> Iterable[tuple[str, bool]]:
        """(line, is_warning) for the terminal summary."""
        if not self.placements:
            return
        placements = sorted(self.placements, key=lambda p: p["worker"])
        where = ", ".join(f"{p['worker']} on CPU {p['cpu']}" if p["cpu"] is not None
                          else f"{p['worker']} unpinned" for p in placements)
        first = placements[0]
        if any(p["oversubscribed"] for p in placements):
            yield (f"agentbench: WARNING: {first['workers']} xdist workers on {first['cpus']} CPUs "
                   f"({where}): workers share CPUs, so times are not sound; use -n {first['cpus']} "
                   "or fewer", True)
        else:
            yield (f"agentbench: benchmarks ran on {len(placements)} xdist workers, each pinned to "
                   f"a CPU of its own ({where})", False)
