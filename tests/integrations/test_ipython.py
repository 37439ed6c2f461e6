"""The %abench / %%abench magics, through IPython's InteractiveShell."""

import pytest

IPython = pytest.importorskip("IPython")

from pyagentbench.integrations.ipython import AbenchResult  # noqa: E402


@pytest.fixture(scope="module")
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "pyagentbench")
    yield shell
    InteractiveShell.clear_instance()


def test_line_magic_times_a_statement_in_the_user_namespace(shell):
    shell.user_ns["words"] = "find the cheapest flight".split()
    result = shell.run_line_magic("abench", "-t 0.05 sorted(words)")
    assert isinstance(result, AbenchResult)
    assert result.result == sorted(shell.user_ns["words"])
    assert result.measurement.rounds >= 5
    assert 0 < result.measurement.median < 1e-3
    assert result.metrics["allocs_per_call"] >= 1  # the new list
    assert result.metrics["peak_rss_bytes"] > 0


def test_line_magic_options(shell):
    result = shell.run_line_magic("abench", "-r 4 -n 10 --no-allocs --no-resources len('abc')")
    assert result.measurement.rounds == 4 and result.measurement.loops == 10
    assert "allocs_per_call" not in result.metrics and "peak_rss_bytes" not in result.metrics


def test_cell_magic_runs_setup_once_and_times_the_cell(shell):
    result = shell.run_cell_magic("abench", "-r 3 -n 2 counter = []", "counter.append(1)\nx = len(counter)\n")
    assert result.measurement.rounds == 3
    # setup once; then the probe call, warmup round and timed rounds; then the allocation passes
    assert len(shell.user_ns["counter"]) >= 1 + 2 * (1 + 3)


def test_result_renders_as_html_and_text(shell):
    result = shell.run_line_magic("abench", "-t 0.02 [0] * 100")
    page = result._repr_html_()
    assert page.startswith("<table") and "peak RSS" in page and "allocs/call" in page
    text = repr(result)
    assert text.startswith("%abench [0] * 100") and "median" in text


def test_bad_usage_raises_clear_errors(shell):
    with pytest.raises(ValueError, match="needs a statement"):
        shell.run_line_magic("abench", "-r 3")
    with pytest.raises(ValueError, match="bad options"):
        shell.run_line_magic("abench", "-r x len('a')")
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        shell.run_line_magic("abench", "-r 0 len('a')")


def test_native_timers_import_directly(shell):
    shell.run_cell("from pyagentbench import now_ns, Timer\nt0 = now_ns()\nwith Timer() as t: pass")
    assert shell.user_ns["t"].elapsed_ns >= 0


def test_awaitable_statements_are_awaited(shell):
    shell.run_cell("import asyncio\nasync def co(x):\n    await asyncio.sleep(0.001)\n    return x")
    for line in ("-r 3 -n 1 co(5)", "-r 3 -n 1 await co(5)"):
        result = shell.run_line_magic("abench", line)
        assert result.result == 5
        assert result.measurement.min >= 0.9e-3


def test_cell_result_names_its_magic(shell):
    result = shell.run_cell_magic("abench", "-r 2 -n 1", "x = 1\n")
    assert repr(result).startswith("%%abench x = 1")


def test_unknown_option_is_one_clear_error(shell, capsys):
    with pytest.raises(ValueError, match="bad options"):
        shell.run_line_magic("abench", "-x 3 len('a')")
    assert "usage" not in capsys.readouterr().err


def test_cell_that_awaits_is_timed_as_a_coroutine(shell):
    shell.run_cell("import asyncio\nasync def co(x):\n    await asyncio.sleep(0.001)\n    return x")
    result = shell.run_cell_magic("abench", "-r 3 -n 2", "value = await co(7)\nassert value == 7\n")
    assert result.measurement.rounds == 3 and result.measurement.loops == 2
    assert result.measurement.min >= 0.9e-3  # each call awaited its 1 ms sleep
    assert repr(result).startswith("%%abench value = await co(7)")


def test_line_result_names_the_statement_as_typed(shell):
    shell.run_cell("async def co(x):\n    return x")
    assert repr(shell.run_line_magic("abench", "-r 2 -n 1 await co(1)")).startswith("%abench await co(1)")


def test_magics_work_while_an_event_loop_runs(shell):
    """A notebook kernel runs the cell inside its event loop; asyncio.run stands in for it here."""
    import asyncio

    shell.run_cell("import asyncio\nasync def co(x):\n    await asyncio.sleep(0.001)\n    return x")

    async def in_a_kernel():
        line = shell.run_line_magic("abench", "-r 3 -n 1 await co(5)")
        cell = shell.run_cell_magic("abench", "-r 3 -n 1", "assert await co(6) == 6\n")
        return line, cell

    line, cell = asyncio.run(in_a_kernel())
    assert line.result == 5 and line.measurement.min >= 0.9e-3
    assert cell.measurement.min >= 0.9e-3
    assert line.metrics["allocs_per_call"] > 0 and cell.metrics["allocs_per_call"] > 0


def test_cell_with_async_for_and_async_with_is_awaited(shell):
    shell.run_cell(
        "import asyncio, contextlib\n"
        "async def ticks(n):\n"
        "    for i in range(n):\n"
        "        await asyncio.sleep(0.0005)\n"
        "        yield i\n"
        "@contextlib.asynccontextmanager\n"
        "async def session():\n"
        "    await asyncio.sleep(0.0005)\n"
        "    yield 'open'\n"
    )
    body = "async with session() as s:\n    assert s == 'open'\nasync for i in ticks(2):\n    pass\n"
    result = shell.run_cell_magic("abench", "-r 3 -n 1 --no-allocs", body)
    assert result.measurement.min >= 1.4e-3  # three 0.5 ms sleeps awaited in each call
