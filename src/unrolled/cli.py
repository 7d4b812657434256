"""``python -m unrolled.cli``: the same command line as ``python -m unrolled.commands``
(:mod:`unrolled.commands`), kept for the scripts and habits that call it by this name. Nothing in the
library imports this module."""

import sys

# unrolled.commands.main installs the interrupt handler before any heavy import (see its docstring).
from unrolled.commands import CLIError, build_parser, main

__all__ = ["CLIError", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
