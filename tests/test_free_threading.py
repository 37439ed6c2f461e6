"""What the module declares to a free-threaded CPython (3.13t and later): it needs the GIL."""

import os
import subprocess
import sys
import sysconfig

import pytest

free_threaded = pytest.mark.skipif(
    not sysconfig.get_config_var("Py_GIL_DISABLED"),
    reason="needs a free-threaded CPython build (3.13t or later)",
)


@free_threaded
def test_importing_the_native_module_turns_the_gil_back_on():
    # Py_mod_gil = Py_MOD_GIL_USED (csrc/module.c): the Cache relies on the GIL, so CPython enables
    # it when the module loads, and says so (unless PYTHON_GIL=0 or -X gil=0 overrides it).
    code = (
        "import sys, warnings\n"
        "warnings.simplefilter('always')\n"
        "before = sys._is_gil_enabled()\n"
        "import pyagentbench._native\n"
        "print(before, sys._is_gil_enabled())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=env)
    assert proc.stdout.split() == ["False", "True"]
    assert "pyagentbench._native" in proc.stderr and "GIL" in proc.stderr, proc.stderr
