"""What every command module shares: the user-facing error, and the parser class of every subcommand."""

from __future__ import annotations

import argparse


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2.

    Only the command modules raise it; the library raises ValueError, OSError, ... which ``main`` prints
    the same way.
    """


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with one more keyword, ``intermixed``: options may then come between
    positionals, as in ``unrolled translate DIR --beam 5 TEXT`` (argparse alone stops reading positionals at
    the first option, so TEXT would be "unrecognized").

    Subparsers are made with the class of their parent, so ``subparsers.add_parser(name, intermixed=True)``
    works at every level.
    """

    def __init__(self, *args, intermixed: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.intermixed = intermixed
        self._inside = False

    def parse_known_args(self, args=None, namespace=None):
        if not self.intermixed or self._inside:  # parse_known_intermixed_args calls back in here
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False
