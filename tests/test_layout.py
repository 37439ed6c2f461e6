"""The package's layers: imports go one way, and the public API survives the layout.

The layers are listed once, here, lowest first. A module may import from its own layer and from any
layer below it; never from a layer above, never from a peer layer, and never names from the package
root (``pyagentbench/__init__.py`` is the public API on top of everything, not a place to reach back
into). ``from .. import _native`` names the extension module, not the root's API, and is allowed.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import pyagentbench

PACKAGE = Path(pyagentbench.__file__).parent

# Lowest first. Layers on one rank are peers: neither may import the other.
LAYERS: list[tuple[str, ...]] = [
    ("_native",),  # the C extension (csrc/)
    ("results",),  # pure Python over saved JSON: units, metrics, compare, SLO budgets
    ("instruments", "runtime"),  # facades over the native clocks/sampler and the native runtime
    ("agents",),  # Agent, pool, batch, breaker, load runs, mocks
    ("integrations",),  # pytest plugin and fixture, IPython magics, the pyagentbench command
    ("__init__", "__main__", "mocks"),  # the public API: the package root, python -m, pyagentbench.mocks
]
RANK = {layer: rank for rank, layers in enumerate(LAYERS) for layer in layers}


def layer_of(module: str) -> str:
    """The layer of a dotted module name under pyagentbench ("pyagentbench" itself is the root)."""
    parts = module.split(".")
    assert parts[0] == "pyagentbench", module
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def imports_of(path: Path, source: str | None = None) -> list[tuple[int, str, list[str]]]:
    """Every import in the file, nested and lazy ones included: (line, absolute module, names)."""
    name = module_name(path)
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text() if source is None else source, str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target, [alias.name for alias in node.names]))
    return found


def violations(path: Path, source: str | None = None) -> list[str]:
    """What in one file breaks the layering, as "file:line: reason" lines."""
    here = module_name(path)
    here_layer = layer_of(here)
    rel = path.relative_to(PACKAGE.parent)
    found = []
    for line, target, names in imports_of(path, source):
        if target != "pyagentbench" and not target.startswith("pyagentbench."):
            continue  # the standard library or a dependency
        if target == "pyagentbench":
            # `from pyagentbench import X` / `from .. import X`: only submodules may come this way
            targets = [f"pyagentbench.{n}" for n in names] if names else ["pyagentbench"]
            root_names = [n for n in names if n != "_native"] if names else ["pyagentbench"]
            if root_names and here_layer != "__init__":
                found.append(f"{rel}:{line}: imports {', '.join(root_names)} from the package root")
                continue
        else:
            targets = [target]
        for t in targets:
            there = layer_of(t)
            if there == here_layer or there not in RANK:
                continue
            if RANK[there] > RANK[here_layer]:
                found.append(f"{rel}:{line}: {here_layer} imports {t}, a layer above it")
            elif RANK[there] == RANK[here_layer]:
                found.append(f"{rel}:{line}: {here_layer} imports {t}, a peer layer")
    return found


def test_every_package_directory_is_a_listed_layer():
    dirs = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    top_modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert dirs | top_modules | {"_native"} == set(RANK)


def test_imports_go_down_the_layers():
    problems = [v for path in package_files() for v in violations(path)]
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(
    "source, expected",
    [
        (
            "from ..integrations.plugin import x\n",
            "instruments imports pyagentbench.integrations.plugin, a layer above it",
        ),
        ("from ..runtime import cache\n", "instruments imports pyagentbench.runtime, a peer layer"),
        ("def f():\n    from .. import Agent\n", "imports Agent from the package root"),
        (
            "import pyagentbench.agents.load\n",
            "instruments imports pyagentbench.agents.load, a layer above it",
        ),
        ("from pyagentbench import measure\n", "imports measure from the package root"),
    ],
)
def test_the_checker_catches_what_it_forbids(source, expected):
    # the source of a would-be module in instruments/; nothing is written into the package
    probe = PACKAGE / "instruments" / "_layout_probe.py"
    assert [v.split(": ", 1)[1] for v in violations(probe, source)] == [expected]


def test_allowed_imports_pass_the_checker():
    probe = PACKAGE / "agents" / "_layout_probe.py"
    source = (
        "from .. import _native\nfrom ..runtime.cache import Cache\n"
        "from ..instruments import timers\nfrom ..results.units import x\nimport json\n"
    )
    assert violations(probe, source) == []


def test_every_public_name_is_the_object_its_module_defines():
    # Import every submodule first: a subpackage or module named like a public function would
    # replace it as an attribute of the package (``pyagentbench.measure`` must stay the function).
    for info in pkgutil.walk_packages(pyagentbench.__path__, "pyagentbench."):
        importlib.import_module(info.name)
    for name in pyagentbench.__all__:
        value = getattr(pyagentbench, name)
        module = pyagentbench._LAZY.get(name)
        if module is not None:
            assert value is getattr(importlib.import_module(f"pyagentbench.{module}"), name), name
    assert callable(pyagentbench.measure)
    assert set(pyagentbench.__all__) <= set(dir(pyagentbench))


def test_public_mocks_module_reexports_the_agent_layer():
    import pyagentbench.mocks as public
    from pyagentbench.agents import mocks

    assert public.__all__
    for name in public.__all__:
        assert getattr(public, name) is getattr(mocks, name), name


def test_pytest11_entry_point_loads_the_plugin():
    # In a fresh interpreter: pytester's tests restore sys.modules around themselves, which leaves
    # this process's importlib.metadata unable to see any distribution afterwards.
    code = (
        "import importlib.metadata as m\n"
        # entry_points(group=...) is Python 3.10+; 3.9 gives a dict, and may list a distribution
        # twice, hence the set
        "eps = m.entry_points()\n"
        "eps = eps.select(group='pytest11') if hasattr(eps, 'select') else eps['pytest11']\n"
        "(e,) = {e for e in eps if e.name == 'agentbench'}\n"
        "print(e.value, hasattr(e.load(), 'pytest_addoption'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["pyagentbench.integrations.plugin", "True"]


def test_importing_the_package_loads_only_the_clocks():
    code = (
        "import sys, pyagentbench\n"
        "print(sorted(m for m in sys.modules if m.startswith('pyagentbench')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['pyagentbench', 'pyagentbench._native']"
