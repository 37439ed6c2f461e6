"""Build the C extension pyagentbench._native from csrc/*.c.

Metadata lives in pyproject.toml. Set PYAGENTBENCH_WERROR=1 to turn compiler warnings into errors
(CI does); PYAGENTBENCH_DEBUG=1 builds without optimisation and with debug symbols.
When valgrind's <valgrind/callgrind.h> compiles, csrc/callgrind.c uses its client requests
(PAB_HAVE_CALLGRIND_H); PYAGENTBENCH_CALLGRIND_H=0 builds the fallback without them.
"""

import glob
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import Extension, setup


def _compile_args():
    if sys.platform == "win32":
        return ["/W4"]
    args = ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"]
    if os.environ.get("PYAGENTBENCH_WERROR") == "1":
        args.append("-Werror")
    if os.environ.get("PYAGENTBENCH_DEBUG") == "1":
        args += ["-O0", "-g3"]
    return args


def _have_callgrind_h():
    """True when a C file including <valgrind/callgrind.h> compiles with this Python's compiler."""
    if sys.platform == "win32" or os.environ.get("PYAGENTBENCH_CALLGRIND_H") == "0":
        return False
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "probe.c")
        with open(source, "w") as file:
            file.write("#include <valgrind/callgrind.h>\nint main(void) { CALLGRIND_ZERO_STATS; return 0; }\n")
        try:
            done = subprocess.run(compiler + ["-fsyntax-only", source], capture_output=True)
        except OSError:
            return False
    return done.returncode == 0


setup(
    ext_modules=[
        Extension(
            "pyagentbench._native",
            sources=sorted(glob.glob(os.path.join("csrc", "*.c"))),
            depends=sorted(glob.glob(os.path.join("csrc", "*.h"))),
            include_dirs=["csrc"],
            extra_compile_args=_compile_args(),
            libraries=[] if sys.platform == "win32" else ["pthread"],
            define_macros=[("PAB_HAVE_CALLGRIND_H", "1")] if _have_callgrind_h() else [],
        )
    ],
)
