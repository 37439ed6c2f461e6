"""Fuzz target: the saved-JSON reader and the compare engine (pyagentbench/results/baseline.py,
compare.py) on hostile pytest-benchmark files.

    python fuzz/fuzz_saved_json.py -max_total_time=600 [corpus dir]

Each input is, by its first byte, either
  - raw bytes written to a file and read with ``load_records`` (truncated, not UTF-8, not JSON,
    1e400, NaN/Infinity, integers too long to read, nesting deeper than the recursion limit), or
  - a pytest-benchmark document built from the input, with hostile values where numbers, strings
    and objects belong (wrong types, 1e400, NaN, Infinity, 10**5000, nesting 1000 to 100000
    deep, long strings), handed to ``records_from_json`` as Python objects and, written out as
    JSON text, to ``load_records``;
and every document read is then gated: ``document_problems``, ``saved_tests``,
``missing_gated_metrics``, ``check_gates`` with gates on every metric, ``format_regressions``.
Once per run, before fuzzing, a 50 MB generated file (not committed) goes through ``load_records``.

Allowed: what each function documents. ``read_document``/``load_records``/``records_from_json``:
BaselineError only. ``document_problems``, ``saved_tests``, ``missing_gated_metrics`` and
``format_regressions``: nothing. ``check_gates``: ValueError (a value that is not a finite number).
Anything else (RecursionError, OverflowError, KeyError, AttributeError, a plain ValueError out of
the reader, a hang past -timeout) fails the run.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import atheris  # noqa: E402

from _harness import main  # noqa: E402

#: The 50 MB case runs in a child process of its own, uninstrumented: coverage tracing would make
#: it ten times slower, and it is one case, not a corpus.
FIFTY_MB_FLAG = "--fifty-megabytes"
if FIFTY_MB_FLAG in sys.argv:
    from pyagentbench.results import baseline, compare, metrics  # noqa: E402
else:
    with atheris.instrument_imports(include=["pyagentbench.results"]):
        from pyagentbench.results import baseline, compare, metrics  # noqa: E402

GATES = [compare.Gate(m, 10.0, m.floor) for m in metrics.METRICS.values()]
METRICS = list(metrics.METRICS.values())
STATS = baseline.NUMERIC_STATS
RECORD_KEYS = [key for m in METRICS for key in m.keys]
#: Each input is written to a file and read back: in memory where Linux offers it.
TMP = tempfile.mkdtemp(prefix="fuzz-saved-json-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
FILE = os.path.join(TMP, "run.json")


class Huge:
    """An integer too long for int(str) (10**digits): JSON text writes it digit by digit."""

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def value(self) -> int:
        return 10 ** self.digits


class Nest:
    """Lists or objects nested *depth* deep, built once: the Python value and its JSON text."""

    def __init__(self, depth: int, kind: str) -> None:
        value: Any = 0
        for _ in range(depth):
            value = [value] if kind == "list" else {"a": value}
        self.value = value
        self.text = ("[" * depth + "0" + "]" * depth if kind == "list"
                     else '{"a":' * depth + "0" + "}" * depth)


NESTS = [Nest(depth, kind) for depth in (10, 990, 1000, 5000, 100_000) for kind in ("list", "dict")]


def hostile(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> Any:
    """A value where a number, a string or an object is expected."""
    kind = fdp.ConsumeIntInRange(0, 17)
    if kind == 0:
        return fdp.ConsumeFloat()  # includes NaN, +-inf, subnormals
    if kind == 1:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 140))
    if kind == 2:
        return fdp.PickValueInList([1e400, -1e400, float("nan"), 1e308, -1e308, 5e-324, -0.0, 0.0])
    if kind == 3:
        return Huge(fdp.PickValueInList([309, 400, 4300, 4301, 5000, 20000]))
    if kind == 4:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 64))
    if kind == 5:
        return "x" * fdp.PickValueInList([1000, 100_000, 1_000_000])
    if kind == 6:
        return None
    if kind == 7:
        return fdp.ConsumeBool()
    if kind == 8:  # nesting: as Python objects it can go far deeper than json.loads allows
        return fdp.PickValueInList(NESTS)
    if depth < 3 and kind in (9, 10):
        return [hostile(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    if depth < 3 and kind in (11, 12):
        return {fdp.ConsumeUnicodeNoSurrogates(8): hostile(fdp, depth + 1)
                for _ in range(fdp.ConsumeIntInRange(0, 4))}
    return fdp.ConsumeProbability() * 1e3


def field(fdp: atheris.FuzzedDataProvider, good: Any) -> Any:
    """Mostly the good value, sometimes a hostile one, sometimes missing (None here)."""
    choice = fdp.ConsumeIntInRange(0, 9)
    if choice < 6:
        return good
    if choice < 9:
        return hostile(fdp)
    return _MISSING


_MISSING = object()


def put(target: dict, key: str, value: Any) -> None:
    if value is not _MISSING:
        target[key] = value


def build_document(fdp: atheris.FuzzedDataProvider) -> Any:
    if fdp.ConsumeIntInRange(0, 19) == 0:
        return hostile(fdp)
    doc: dict = {}
    put(doc, "machine_info", field(fdp, {"node": "ci"}))
    benchmarks = []
    for index in range(fdp.ConsumeIntInRange(0, 5)):
        if fdp.ConsumeIntInRange(0, 15) == 0:
            benchmarks.append(hostile(fdp))
            continue
        entry: dict = {}
        put(entry, "name", field(fdp, f"test_{index}"))
        put(entry, "fullname", field(fdp, f"tests/test_x.py::test_{fdp.ConsumeIntInRange(0, 3)}"))
        stats: dict = {}
        for key in STATS:
            put(stats, key, field(fdp, fdp.ConsumeProbability() * 10.0))
        put(entry, "stats", field(fdp, stats))
        record: dict = {}
        for _ in range(fdp.ConsumeIntInRange(0, 6)):
            key = fdp.PickValueInList(RECORD_KEYS)
            put(record, key, field(fdp, fdp.ConsumeProbability() * 1e6))
        extra: dict = {}
        put(extra, metrics.EXTRA_INFO_KEY, field(fdp, record))
        put(entry, "extra_info", field(fdp, extra))
        benchmarks.append(entry)
    put(doc, "benchmarks", field(fdp, benchmarks))
    return doc


def to_python(value: Any) -> Any:
    """The document as json.loads would give it (Huge -> int), without recursion."""
    if isinstance(value, Huge):
        return value.value()
    if isinstance(value, Nest):
        return value.value
    if isinstance(value, list):
        return [to_python(v) for v in value]
    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    return value


class Raw(str):
    """Text already in JSON form, written as is."""


def to_text(value: Any, out: list) -> None:
    """JSON text of the document; Huge as its digits, NaN/Infinity as Python's json writes them."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is Raw:
            out.append(item)
        elif isinstance(item, Nest):
            out.append(item.text)
        elif isinstance(item, Huge):
            out.append("1" + "0" * item.digits)
        elif isinstance(item, list):
            out.append("[")
            stack.append(Raw("]"))
            for i, v in enumerate(reversed(item)):
                stack.append(v)
                if i < len(item) - 1:
                    stack.append(Raw(","))
        elif isinstance(item, dict):
            out.append("{")
            stack.append(Raw("}"))
            pairs = list(item.items())
            for i, (k, v) in enumerate(reversed(pairs)):
                stack.append(v)
                stack.append(Raw(json.dumps(str(k)) + ":"))
                if i < len(pairs) - 1:
                    stack.append(Raw(","))
        else:
            out.append(json.dumps(item))


def check_reader(data: Any, records: Any) -> None:
    """Everything downstream of a document that was read: no exception but the documented ones."""
    problems = baseline.document_problems(data, METRICS)
    assert isinstance(problems, list) and all(isinstance(p, str) for p in problems), problems
    if problems:
        return
    saved = baseline.saved_tests("run.json", data["benchmarks"])
    baseline.missing_gated_metrics(METRICS, records, saved)
    try:
        regressions = compare.check_gates(GATES, records, records)
    except ValueError as exc:  # documented: a value that is not a finite number
        assert type(exc) is ValueError, exc
        return
    assert regressions == [], regressions  # a run never regresses against itself
    halved = {test: {k: (v / 2 if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                     for k, v in record.items()} for test, record in records.items()}
    for base, now in ((records, halved), (halved, records)):
        try:
            regressions = compare.check_gates(GATES, now, base)
        except ValueError as exc:
            assert type(exc) is ValueError, exc
            continue
        for line in compare.format_regressions(regressions):
            assert isinstance(line, str)


def read_file(raw: bytes) -> None:
    with open(FILE, "wb") as f:
        f.write(raw)
    try:
        records = compare.load_records(FILE)
    except baseline.BaselineError as exc:
        assert exc.problems and all(isinstance(p, str) for p in exc.problems), exc.problems
        str(exc)
        return
    check_reader(baseline.read_document(FILE), records)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeIntInRange(0, 3) == 0:
        read_file(fdp.ConsumeBytes(fdp.remaining_bytes()))
        return
    document = build_document(fdp)
    python = to_python(document)
    try:
        records = compare.records_from_json(python)
    except baseline.BaselineError as exc:
        assert exc.problems and all(isinstance(p, str) for p in exc.problems), exc.problems
        str(exc)
    else:
        check_reader(python, records)
    out: list = []
    to_text(document, out)
    read_file("".join(out).encode("utf-8", "surrogatepass"))


def fifty_megabytes() -> None:
    """One generated 50 MB file through the reader: read in full, under a time bound."""
    entry = {"name": "t", "fullname": "tests/test_big.py::test_{}", "stats": {
        k: 1.0 for k in STATS}, "extra_info": {"agentbench": {"peak_rss_bytes": 1e6, "pad": "x" * 4000}}}
    text = json.dumps(entry)
    n = 50_000_000 // len(text) + 1
    body = ",".join(text.replace("test_{}", f"test_{i}") for i in range(n))
    raw = ('{"machine_info": {}, "benchmarks": [' + body + "]}").encode()
    started = time.perf_counter()
    with open(FILE, "wb") as f:
        f.write(raw)
    records = compare.load_records(FILE)
    assert len(records) == n, (len(records), n)
    regressions = compare.check_gates(GATES, records, records)
    assert regressions == []
    print(f"fuzz_saved_json: a {len(raw) / 1e6:.0f} MB file with {n} benchmarks read and gated in "
          f"{time.perf_counter() - started:.1f} s", flush=True)


def seeds() -> list:
    good = {"machine_info": {}, "benchmarks": [{"name": "t", "fullname": "m::t", "stats": {
        "min": 1, "max": 2, "mean": 1.5, "stddev": 0.1, "median": 1.5, "rounds": 5},
        "extra_info": {"agentbench": {"peak_rss_bytes": 1048576, "throughput_per_s": 10.0}}}]}
    text = json.dumps(good).encode()
    return [b"\0" + text, b"\0" + text.replace(b"1048576", b"1e400"), b"\0" + b"[" * 2000,
            b"\0" + text.replace(b"10.0", b"NaN"), b"\1" * 64, bytes(range(256))]


if __name__ == "__main__":
    if FIFTY_MB_FLAG in sys.argv:
        fifty_megabytes()
        sys.exit(0)
    if not any(a.startswith("-runs=") or os.path.isfile(a) for a in sys.argv[1:]):
        subprocess.run([sys.executable, __file__, FIFTY_MB_FLAG], check=True, timeout=120)
    main(test_one_input, seeds())
