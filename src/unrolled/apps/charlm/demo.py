"""The corpus and the model of ``unrolled demo``: a small character-level LSTM trained on Python's own
source, which then writes Python.

Nothing is downloaded and no file is needed: the corpus is the source of :data:`DEMO_MODULES`, a fixed
list of pure-Python modules of the standard library, found with ``importlib.util.find_spec(name).origin``
on the interpreter that runs the demo (about 0.8 MB of text). Their exact text — and so the
numbers — varies a little between Python versions.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from unrolled.apps.charlm.lm import CharLMConfig

# Pure-Python standard-library modules present on every CPython install (none is frozen, none is split
# off into a separate distribution package), in the order their texts are concatenated. The last ones
# (about 10% of the text: contextlib's end to ipaddress) are the validation part.
#
# About 2.3 MB (3.11): two minutes of training are ~2,000 steps of 32 × 64 characters, ~4 M characters,
# so the model sees its training text about twice. On the first 26 modules alone (0.79 MB: six passes)
# validation was best at step 1,200 and rose for the rest of the run (2.39 -> 2.46 bits per character).
DEMO_MODULES: tuple[str, ...] = (
    "typing", "inspect", "pathlib", "tarfile", "subprocess", "threading", "shutil", "tempfile", "traceback",
    "configparser", "tokenize", "ast", "pickle", "optparse", "gettext", "selectors", "socket", "smtplib",
    "ftplib", "cmd", "code", "trace", "timeit", "pstats", "platform", "uuid", "weakref", "warnings",
    "graphlib", "fileinput", "filecmp", "logging", "collections",
    "argparse", "textwrap", "string", "shlex", "fnmatch", "glob", "bisect", "heapq", "colorsys",
    "calendar", "difflib", "functools", "fractions", "statistics", "queue", "random", "dataclasses",
    "csv", "pprint", "contextlib", "copy", "enum", "base64", "numbers", "operator", "ipaddress",
)  # fmt: skip

DEFAULT_OUT = Path("runs") / "demo"


def demo_corpus(modules: tuple[str, ...] = DEMO_MODULES) -> list[Path]:
    """The source files of `modules` on this interpreter; modules without a .py source are left out."""
    paths = []
    for name in modules:
        spec = importlib.util.find_spec(name)
        origin = getattr(spec, "origin", None)
        if origin and origin.endswith(".py") and Path(origin).is_file():
            paths.append(Path(origin))
    if len(paths) < len(modules) // 2:
        raise RuntimeError(
            f"demo: only {len(paths)} of the {len(modules)} standard-library sources were found on this "
            f"Python ({sys.executable}); train on your own text with `unrolled train charlm --text FILE`"
        )
    return paths


# The model the demo trains: small enough to learn something visible in two minutes on 2 CPU cores. Each
# validation reads the first 100,000 held-out characters (1.1-1.4 s; the 150 steps between two take ~7.5 s).
DEMO_MODEL = CharLMConfig(
    cell="lstm", layers=2, hidden=192, embed=48, seq_len=64, batch=32, lr=3e-3, clip=5.0,
    val_every=150, val_chars=100_000,
)  # fmt: skip

PRIME = "def "
