"""What every fuzz target in this directory shares: how it starts libFuzzer, and its seed corpus.

A target is a script, ``python fuzz/<target>.py [libFuzzer options] [corpus dir ...]``. With no
corpus directory given, a fresh temporary one is made and filled with the target's seeds
(generated here, nothing is committed); with one, libFuzzer reads it and adds what it finds to
it, so a long run by hand can keep its corpus::

    python fuzz/fuzz_parsers.py -max_total_time=600 /tmp/corpus-parsers

Defaults, each overridable on the command line: ``-timeout=10`` (an input running longer is a
hang, and fails the run), ``-rss_limit_mb=3072``, ``-max_len=65536`` and
``-print_final_stats=1``. At the end libFuzzer prints ``#N DONE cov: .. corp: X/Yb exec/s: ..``:
N executions, a corpus of X inputs totalling Y bytes.

A target fails (libFuzzer exits non-zero and writes the input to ``crash-<sha1>``) on a crash, a
hang, or an exception the code under test does not document; each target says which it allows.
Re-run one input with ``python fuzz/<target>.py crash-<sha1>``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Callable, Iterable

import atheris

DEFAULTS = ("-timeout=10", "-rss_limit_mb=3072", "-max_len=65536", "-print_final_stats=1")


class FuzzUserError(Exception):
    """Raised on purpose by the callables, keys and objects a target hands to the code under test:
    user code failing. The code under test must let it through unchanged."""


def main(test_one_input: Callable[[bytes], None], seeds: Iterable[bytes] = ()) -> None:
    """Start libFuzzer on *test_one_input*, with *seeds* as the corpus when none is given."""
    argv = list(sys.argv)
    options = [a for a in argv[1:] if a.startswith("-")]
    paths = [a for a in argv[1:] if not a.startswith("-")]
    for default in DEFAULTS:
        name = default.split("=")[0] + "="
        if not any(o.startswith(name) for o in options):
            options.append(default)
    if not paths:
        corpus = tempfile.mkdtemp(prefix=f"corpus-{os.path.basename(argv[0])[:-3]}-")
        for index, seed in enumerate(seeds):
            with open(os.path.join(corpus, f"seed-{index:03d}"), "wb") as f:
                f.write(seed)
        paths = [corpus]
    atheris.Setup([argv[0], *options, *paths], test_one_input)
    atheris.Fuzz()
