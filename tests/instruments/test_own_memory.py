"""The test's own memory: ResourceWindow's peak above its start, and trim_heap() before the start.

Known answers: ``b"x" * (50 << 20)`` touches 50 MiB, so inside a window it raises the own peak by
50 MiB (plus a few pages), whatever the process allocated, freed or kept before the window.
50 Ki bytes objects of 1 KiB take 50 Ki malloc chunks of 1,072 bytes (1,024 + the 33-byte bytes
header, rounded up to 16 with the 8-byte chunk header) plus a 400 KiB list: 52.7 MiB.
"""

from __future__ import annotations

import json
import os
import platform
import sys

import psutil
import pytest

from pyagentbench.instruments import resources
from pyagentbench.instruments.observe import ResourceWindow

MiB = 1 << 20
PAGE = os.sysconf("SC_PAGESIZE") if hasattr(os, "sysconf") else 4096
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="procfs")
glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")

#: Bytes one 1 KiB bytes object takes from glibc malloc (see the module docstring).
CHUNK = 1072


def statm_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(field)


def small_objects(mib: int) -> list[bytes]:
    """mib MiB of 1 KiB bytes objects: over pymalloc's 512-byte limit, so each comes from
    glibc malloc's heap (not mmap), which keeps them resident after they are freed."""
    return [bytes([i & 255]) * 1024 for i in range(mib * 1024)]


def free_resident(mib: int) -> bytes:
    """Allocate mib MiB of small objects and free them, keeping one object allocated after them
    so the heap cannot shrink from the top: the freed memory stays in RSS until trimmed."""
    objects = small_objects(mib)
    pin = bytes(objects[-1]) + b"pin"
    del objects
    return pin


# ---- trim_heap ----


@glibc_only
@linux_only
@pytest.mark.no_sanitizer(reason="ASan holds freed blocks in its quarantine: RSS does not fall when they are freed")
def test_trim_heap_hands_freed_small_objects_back_to_the_os():
    base = statm_rss()
    pin = free_resident(200)
    untrimmed = statm_rss()
    assert untrimmed - base >= 190 * MiB  # freed, yet still resident: glibc keeps it
    trim = resources.trim_heap()
    trimmed = statm_rss()
    assert trim.ran is True
    assert untrimmed - trimmed >= 190 * MiB
    assert trimmed - base < 8 * MiB
    # What it reports released is the statm drop around the call.
    assert abs(trim.released_bytes - (untrimmed - trimmed)) < 2 * MiB
    assert pin.endswith(b"pin")


@glibc_only
def test_trim_heap_keeps_live_memory_and_is_harmless_when_nothing_is_free():
    live = small_objects(20)
    resources.trim_heap()
    again = resources.trim_heap()
    assert again.ran is True and again.released_bytes < 2 * MiB
    assert all(len(obj) == 1024 and obj[0] == i & 255 for i, obj in enumerate(live))


def test_trim_heap_without_the_native_call_does_nothing(monkeypatch):
    monkeypatch.delattr(resources._native, "trim_heap")
    assert resources.trim_heap() == resources.HeapTrim(False, 0)


# ---- ResourceWindow: the own peak ----


def own_peak(inside) -> dict:
    with ResourceWindow() as window:
        inside()
    return window.metrics


def alloc_50_mib_buffer() -> None:
    block = b"x" * (50 * MiB)
    del block


def alloc_50_mib_small() -> None:
    objects = small_objects(50)
    del objects


def nothing() -> None:
    pass


def history_buffer():
    block = b"x" * (100 * MiB)  # allocated and freed before the window
    del block
    return None


def history_small():
    return free_resident(100)  # freed before the window, still resident until trimmed


def history_kept():
    return b"x" * (100 * MiB)  # alive through the window (another test's state, a baseline JSON)


HISTORIES = {"fresh": lambda: None, "freed buffer": history_buffer,
             "freed small objects": history_small, "kept 100 MiB": history_kept}


@linux_only
@pytest.mark.no_sanitizer(reason="an RSS reading: ASan's shadow memory and quarantine move it by megabytes")
@pytest.mark.parametrize("history", list(HISTORIES))
def test_50_mib_inside_the_window_is_50_mib_whatever_came_before(history):
    kept = HISTORIES[history]()
    m = own_peak(alloc_50_mib_buffer)
    # Within 1 MiB: the kernel batches RSS counter updates per thread (up to 64 pages each).
    assert 49 * MiB <= m["peak_rss_bytes"] < 51 * MiB
    assert m["process_peak_rss_bytes"] == m["start_rss_bytes"] + m["peak_rss_bytes"]
    # The kernel's own high-water mark, reset when the window opened, agrees.
    assert abs(status_bytes("VmHWM") - m["process_peak_rss_bytes"]) < 2 * MiB
    del kept


@pytest.mark.no_sanitizer(reason="ASan pads each small allocation with redzones: 50 MiB of small objects take more")
@linux_only
@pytest.mark.parametrize("history", list(HISTORIES))
def test_small_objects_inside_the_window_count_even_where_freed_memory_was_resident(history):
    """Without the trim, malloc would reuse the freed-but-resident heap and the allocation would
    not raise RSS at all (the window read 0 after 100 MiB of small objects were freed)."""
    kept = HISTORIES[history]()
    m = own_peak(alloc_50_mib_small)
    expected = 50 * 1024 * CHUNK + 50 * 1024 * 8  # the chunks and the list's pointer array
    assert expected - MiB <= m["peak_rss_bytes"] < expected + 2 * MiB
    del kept


@linux_only
@pytest.mark.no_sanitizer(reason="an RSS reading: ASan's shadow memory and quarantine move it by megabytes")
def test_start_rss_is_the_trimmed_rss_and_matches_psutil():
    pin = free_resident(100)
    untrimmed = statm_rss()
    with ResourceWindow() as window:
        during = psutil.Process().memory_info().rss
        vmrss = status_bytes("VmRSS")
    m = window.metrics
    if platform.libc_ver()[0] == "glibc":
        assert m["start_rss_bytes"] <= untrimmed - 90 * MiB
        assert m["heap_trimmed_bytes"] >= 90 * MiB
    # Nothing ran inside: the start is what psutil and /proc/self/status read inside the window.
    assert abs(m["start_rss_bytes"] - during) < 2 * MiB
    assert abs(m["start_rss_bytes"] - vmrss) < 2 * MiB
    assert pin.endswith(b"pin")


@linux_only
def test_an_empty_window_owns_almost_nothing():
    history_kept_alive = b"x" * (100 * MiB)
    m = own_peak(nothing)
    assert 0 <= m["peak_rss_bytes"] < 512 * 1024
    assert m["process_peak_rss_bytes"] >= 100 * MiB
    del history_kept_alive


@pytest.mark.no_sanitizer(reason="ASan holds freed blocks in its quarantine: RSS does not fall when they are freed")
def test_memory_freed_inside_the_window_owns_nothing():
    """Freeing inside the window leaves the process peak at the start: the own peak is 0 (a few
    pages at most), never negative."""
    block = b"x" * (20 * MiB)

    def free_it():
        nonlocal block
        block = b""

    m = own_peak(free_it)
    assert 0 <= m["peak_rss_bytes"] < 512 * 1024


# ---- end to end: a benchmark's peak_rss no longer depends on the tests before it ----

SUITE = """
MiB = 1 << 20
keep = []

def test_a_earlier_test_frees_small_objects():
    objects = [bytes([i & 255]) * 1024 for i in range(60 * 1024)]
    keep.append(bytes(objects[-1]))  # pins the top of the heap
    del objects

def test_b_keeps_state_alive():
    keep.append(b"x" * (40 * MiB))

def test_c_bench(agent_benchmark):
    agent_benchmark.pedantic(lambda: len(b"x" * (10 * MiB)), rounds=3, iterations=1)
"""


@linux_only
@pytest.mark.no_sanitizer(reason="ASan holds freed blocks in its quarantine: RSS does not fall when they are freed")
@pytest.mark.parametrize("selection", [(), ("-k", "c_bench")])
def test_a_benchmarks_peak_rss_is_its_own_in_any_selection(pytester, selection):
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--benchmark-json=out.json",
                                           *selection)
    assert result.ret == 0
    bench = json.loads((pytester.path / "out.json").read_text())["benchmarks"][0]
    record = bench["extra_info"]["agentbench"]
    # 10 MiB touched per call, freed between calls: the own peak is 10 MiB, with or without the
    # 60 MiB freed and 40 MiB kept by the tests before it.
    assert 10 * MiB <= record["peak_rss_bytes"] < 12 * MiB
    assert record["process_peak_rss_bytes"] >= record["start_rss_bytes"] + 10 * MiB
    if not selection:
        assert record["start_rss_bytes"] >= 40 * MiB  # the kept state is in the process's figure
