"""The ``unrolled`` command line, on top of the library: one module per verb, each with
``register(subparsers)`` and ``run(args)``, listed in :data:`unrolled.commands.main.COMMANDS`.

Nothing below this package imports it: the library raises ValueError, OSError, ... and :func:`main`
prints them as one ``unrolled: error: …`` line. ``train`` has one module per kind (``train_charlm`` ...).
"""

from unrolled.commands._common import CLIError
from unrolled.commands.main import build_parser, main

__all__ = ["CLIError", "build_parser", "main"]
