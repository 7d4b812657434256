"""The ``unrolled`` command line, on top of the library: one module per verb, each with
``register(subparsers)`` and ``run(args)``, listed in ``unrolled.commands.main.COMMANDS``.

Nothing below this package imports it: the library raises ValueError, OSError, ... and :func:`main`
prints them as one ``unrolled: error: …`` line. ``train`` has one module per kind (``train_charlm`` ...).
"""

# main first: it installs the interrupt handler before anything else is imported.
from unrolled.commands.main import build_parser, main  # isort: skip
from unrolled.commands._common import CLIError  # isort: skip

__all__ = ["CLIError", "build_parser", "main"]
