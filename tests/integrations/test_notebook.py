"""%abench and %%abench in a real Jupyter kernel: a notebook executed with nbclient + ipykernel.

A kernel runs its own event loop while a cell executes, so every pass of the measurement that
awaits must do so off that loop; the in-process InteractiveShell of test_ipython.py runs none.
"""

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

LATENCY_S = 0.002  # every MockLLM call waits this long: no timed call is faster

SETUP = f"""
from pyagentbench.mocks import MockLLM
llm = MockLLM(responses=["hello"], latency={LATENCY_S}, seed=1)
"""

CELLS = {
    "load": "%load_ext pyagentbench",
    "setup": SETUP,
    "await": "%abench -t 0.05 await llm.acomplete('hi')",
    "awaitable": "%abench -t 0.05 llm.acomplete('hi')",
    "cell": "%%abench -t 0.05\nreply = await llm.acomplete('hi')\nassert reply == 'hello'",
    "numbers": (
        "r = %abench -r 5 -n 1 await llm.acomplete('hi')\n"
        f"print(r.result, r.measurement.rounds, r.measurement.min >= {LATENCY_S}, "
        "r.metrics['allocs_per_call'] > 0, r.metrics['peak_rss_bytes'] > 0)"
    ),
    "cell-numbers": (
        "r = get_ipython().run_cell_magic('abench', '-r 4 -n 2', "
        "'reply = await llm.acomplete(\"hi\")\\nassert reply == \"hello\"')\n"
        f"print(r.measurement.rounds, r.measurement.loops, r.measurement.min >= {LATENCY_S})"
    ),
    "loop": (
        "import asyncio\n"
        "async def current_loop():\n"
        "    return asyncio.get_running_loop()\n"
        "r = %abench -r 1 -n 1 --no-allocs await current_loop()\n"
        "print(r.result is not asyncio.get_running_loop())"
    ),
}


@pytest.fixture(scope="module")
def executed():
    """The notebook above, executed in a fresh python3 kernel; its cells' outputs by name."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in CELLS.values()])
    client = nbclient.NotebookClient(notebook, timeout=60, kernel_name="python3", allow_errors=True)
    client.execute()
    return dict(zip(CELLS, (cell.outputs for cell in notebook.cells)))


def _errors(outputs):
    return [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]


def _result(outputs):
    (result,) = [o for o in outputs if o.output_type == "execute_result"]
    return result.data


@pytest.mark.parametrize("name, caption", [
    ("await", "await llm.acomplete(&#x27;hi&#x27;)"),
    ("awaitable", "llm.acomplete(&#x27;hi&#x27;)"),
    ("cell", "reply = await llm.acomplete(&#x27;hi&#x27;)"),
])
def test_awaiting_statements_show_the_html_table(executed, name, caption):
    outputs = executed[name]
    assert _errors(outputs) == []
    page = _result(outputs)["text/html"]
    assert page.startswith("<table class='pyagentbench-abench'>")
    assert f"<code>{caption}" in page
    for row in ("median", "p99 (per call)", "peak RSS", "allocs/call"):
        assert f">{row}<" in page, row


def test_awaited_calls_are_timed_as_awaited(executed):
    # Each call waits LATENCY_S: a time below it would mean the coroutine was not awaited.
    for name, expected in (("numbers", "hello 5 True True True"), ("cell-numbers", "4 2 True"),
                           ("loop", "True")):  # awaited on a loop of the measurement's own
        outputs = executed[name]
        assert _errors(outputs) == []
        text = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
        assert text.strip() == expected, name


def test_the_extension_loads_without_output(executed):
    assert executed["load"] == [] and executed["setup"] == []
