"""The ``unrolled`` command line. Each application registers its own subcommands.

Errors a user can cause (bad files, bad options, bad data) print one line and exit non-zero;
no traceback. Set UNROLLED_DEBUG=1 to see the traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Modules with a ``register(subparsers)`` function, in the order their commands are listed.
# A module that needs an optional dependency imports it inside its command, not at registration.
COMMAND_MODULES: list[str] = [
    "unrolled.bench.command",
    "unrolled.diagnostics.cli",
    "unrolled.apps.experiments_cli",
    "unrolled.apps.forecast",
    "unrolled.apps.classify",
    "unrolled.interop.command",
    "unrolled.apps.charlm",  # train charlm, sample, eval
    "unrolled.apps.demo",
    "unrolled.apps.translate",  # last: it adds --pairs to the 'eval' of unrolled.apps.charlm when present
]


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def command_group(subparsers, name: str, help: str):
    """The subcommands of a command that several applications share, e.g. ``unrolled train charlm`` and
    ``unrolled train forecast``: the first application to ask creates ``name``, later ones add to it.

    Returns the sub-subparsers object; call ``add_parser(kind, ...)`` on it.
    """
    parser = subparsers.choices.get(name)
    if parser is None:
        parser = subparsers.add_parser(name, help=help, description=help)
        parser._command_group = parser.add_subparsers(dest=f"{name}_kind", metavar="KIND", required=True)
    return parser._command_group


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unrolled",
        description="Recurrent neural networks (RNN, LSTM, GRU) with hand-written, verified BPTT.",
    )
    from unrolled import __version__

    parser.add_argument("--version", action="version", version=f"unrolled {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        from unrolled.threads import set_blas_threads

        # One BLAS thread by default (see unrolled.threads); a command's own --threads overrides it.
        set_blas_threads(int(os.environ.get("UNROLLED_BLAS_THREADS", "1")))
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("unrolled: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, TypeError, OSError, RuntimeError, ImportError) as e:
        if os.environ.get("UNROLLED_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"unrolled: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # `python -m unrolled.cli`: run the imported module's main, so that the CLIError the applications
    # import from unrolled.cli is the class caught there (this file as __main__ would define another).
    from unrolled.cli import main as _main

    sys.exit(_main())
