"""The ``pyagentbench`` command: its entry points, exit statuses, and the ``clocks`` subcommand."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyagentbench import _native
from pyagentbench.integrations.cli import COMMANDS, build_parser, main


def test_python_dash_m_runs_the_command():
    proc = subprocess.run([sys.executable, "-m", "pyagentbench", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage: pyagentbench" in proc.stdout
    assert "clocks" in proc.stdout


def test_the_console_script_is_installed():
    script = shutil.which("pyagentbench", path=str(Path(sys.executable).parent))
    assert script is not None, "pip install should put a pyagentbench script beside python"
    proc = subprocess.run([script, "clocks"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "now_ns" in proc.stdout


def test_no_subcommand_is_a_usage_error(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_an_unknown_subcommand_is_a_usage_error(capsys):
    assert main(["frobnicate"]) == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


@pytest.mark.parametrize("command", [c.__name__.rpartition(".")[2] for c in COMMANDS])
def test_every_subcommand_has_help(command, capsys):
    name = {"runs": "list"}.get(command, command)
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([name, "--help"])
    assert exc.value.code == 0
    assert f"usage: pyagentbench {name}" in capsys.readouterr().out


def test_clocks_lists_every_native_clock_with_its_source(capsys):
    assert main(["clocks"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["clock", "source", "resolution", "cost", "per", "reading"]
    info = _native.clock_info()
    assert len(out) == 1 + len(info)
    for name, clock in info.items():
        (line,) = [line for line in out if line.startswith(name + " ")]
        assert clock["source"] in line


def test_clocks_as_json_is_clock_info(capsys):
    assert main(["clocks", "--format", "json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == set(_native.clock_info())
