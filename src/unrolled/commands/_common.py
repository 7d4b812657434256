"""What every command module shares: the user-facing error, and the parser class of every subcommand."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

from unrolled.resolve import CHECKPOINTS, ModelChoice, resolve_model


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


def add_run_options(p: argparse.ArgumentParser, what: str = "the interrupted run") -> None:
    """``--resume`` and ``--overwrite``, the two ways to use an ``--out`` that already holds a run."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help=f"continue {what} in --out DIR (same kind)")
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out DIR, of any kind (only the files unrolled wrote are removed; a "
        "folder holding anything else is refused)",
    )


@contextlib.contextmanager
def open_out(args: argparse.Namespace, kind: str) -> Iterator:
    """The run directory ``--out`` opened and locked for a run of `kind` for the ``with`` block (see
    :mod:`unrolled.rundir`): refused when it holds a run (without --resume / --overwrite), a user's files,
    or another writer. A new run that fails before its first checkpoint (e.g. a bad input file) leaves
    the folder as it found it, so the corrected command needs no --overwrite."""
    from unrolled.rundir import open_run

    run = open_run(
        args.out,
        kind,
        resume=bool(getattr(args, "resume", False)),
        overwrite=bool(getattr(args, "overwrite", False)),
        what="--out",
    )
    with run:
        try:
            yield run
        except BaseException:
            if not run.resumed and not run.has_checkpoint():
                run.discard()
            raise


def add_checkpoint_option(p: argparse.ArgumentParser) -> None:
    """``--checkpoint best|last``: which model of a run directory a command reads (see
    :mod:`unrolled.resolve`)."""
    p.add_argument(
        "--checkpoint",
        choices=CHECKPOINTS,
        help="which model of a run directory to use (default: best/ when the run has one, else last/; a "
        "checkpoint directory is used as it is)",
    )


def model_choice(args: argparse.Namespace, directory) -> ModelChoice:
    """The checkpoint directory a command reads for its model argument `directory` (with ``--checkpoint``
    when the command has it). Print :func:`say_model` of it once the command's input has been checked, so
    that a refused command still prints one line only."""
    return resolve_model(directory, getattr(args, "checkpoint", None))


def say_model(choice: ModelChoice) -> None:
    """The line ``using PATH (DETAIL)`` on standard error: which model the command used."""
    print(choice.describe(), file=sys.stderr, flush=True)


# The kinds of unrolled.kernels.quantized.KINDS, spelled here so that building the parser imports no
# NumPy (tests/commands/test_quantize_cli.py checks that the two agree).
QUANTIZED_KINDS = ("int8", "bf16")


def add_quantized_option(p: argparse.ArgumentParser) -> None:
    """``--quantized int8|bf16``: quantise the model's recurrent weights on load (see :func:`quantized`)."""
    p.add_argument(
        "--quantized",
        choices=QUANTIZED_KINDS,
        help="quantise the recurrent weights (W_xh, W_hh) on load, for faster inference: int8 per row with "
        "a float32 scale, or bf16 (a model written by `unrolled quantize` is used as it is stored)",
    )


def quantized(args: argparse.Namespace, model):
    """`model` quantised as ``--quantized`` asks (itself when not asked, or when stored so already)."""
    kind = getattr(args, "quantized", None)
    if kind is None:
        return model
    from unrolled.quantization import quantize, quantized_kind

    have = quantized_kind(model)
    if have == kind:
        return model
    if have is not None:
        raise CLIError(
            f"--quantized {kind}: the model is stored quantised as {have}; quantise the float model"
        )
    return quantize(model, kind)
