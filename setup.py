"""Build the C extension pyagentbench._native from csrc/*.c.

Metadata lives in pyproject.toml. Set PYAGENTBENCH_WERROR=1 to turn compiler warnings into errors
(CI does); PYAGENTBENCH_DEBUG=1 builds without optimisation and with debug symbols.
"""

import glob
import os
import sys

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


setup(
    ext_modules=[
        Extension(
            "pyagentbench._native",
            sources=sorted(glob.glob(os.path.join("csrc", "*.c"))),
            depends=sorted(glob.glob(os.path.join("csrc", "*.h"))),
            include_dirs=["csrc"],
            extra_compile_args=_compile_args(),
            libraries=[] if sys.platform == "win32" else ["pthread"],
        )
    ],
)
