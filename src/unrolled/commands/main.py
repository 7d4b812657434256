"""The ``unrolled`` command line: the parser of every verb, and ``main``.

Errors a user can cause (bad files, bad options, bad data) print one line, ``unrolled: error: <what>:
<why>``, and exit with status 2; a diverged training run exits with 3; Ctrl-C or SIGTERM exits with 130
(a training run first writes its checkpoint). No traceback, at any moment: Set UNROLLED_DEBUG=1 to see
the traceback of an unexpected error.

This module is imported by the console script before anything else of the command line: it installs
the interrupt handler first and imports the heavy modules (NumPy, the apps) only inside :func:`main`, so
a Ctrl-C during start-up is one line too.
"""

from __future__ import annotations

import os
import signal
import sys

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130  # the shell's code for "stopped by Ctrl-C"; SIGTERM gets the same

_phase = {"running": False}  # False until the command runs: an interrupt exits at once


def _interrupt(signum, frame) -> None:
    """SIGINT/SIGTERM outside a training loop: while starting (imports, parsing), one line and exit 130
    at once — nothing is open yet, and a KeyboardInterrupt raised inside an import can surface as a
    traceback or a death by SIGINT; once the command runs, a KeyboardInterrupt, so that files and the
    run lock are closed on the way out (:func:`main` prints the line)."""
    if _phase["running"]:
        raise KeyboardInterrupt
    try:
        os.write(2, b"unrolled: interrupted\n")
    finally:
        os._exit(EXIT_INTERRUPTED)


def install_interrupt_handler() -> dict:
    """Route SIGINT and SIGTERM to :func:`_interrupt` (a signal ignored by the parent stays ignored);
    return the previous handlers. Only in the main thread (elsewhere Python allows no handler)."""
    import threading

    old = {}
    if threading.current_thread() is not threading.main_thread():
        return old
    for sig in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
        if sig is not None and signal.getsignal(sig) != signal.SIG_IGN:
            old[sig] = signal.signal(sig, _interrupt)
    return old


def _started_as_the_command() -> bool:
    """Whether this process is the ``unrolled`` command (the console script or ``python -m
    unrolled.cli``/``unrolled.commands``), not a program that imports the command line (e.g. tests)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None) or ""
    return name.startswith("unrolled.") or os.path.basename(sys.argv[0] if sys.argv else "") == "unrolled"


if _started_as_the_command():  # first of all: the heavy imports below and in main() come after
    install_interrupt_handler()

import argparse  # noqa: E402 - after the handler: nothing here may be interrupted into a traceback

from unrolled import __version__  # noqa: E402
from unrolled.commands._common import CLIError, Parser  # noqa: E402

EPILOG = (
    "exit status: 0 done, 1 help shown, 2 a user error (one line 'unrolled: error: <what>: <why>'), "
    "3 training diverged (the last good checkpoint is kept), 130 interrupted by Ctrl-C or SIGTERM "
    "(a training run stops after the current step with a checkpoint; continue with --resume)."
)


def _commands() -> list:
    """The verbs, in the order `unrolled --help` lists them; each module has register(subparsers) and
    run(args). Imported here, not at the top, so that start-up is interruptible (see the module doc)."""
    from unrolled.commands import (
        bench,
        classify,
        data,
        demo,
        diagnose,
        experiment,
        export,
        forecast,
        quantize,
        sample,
        train,
        translate,
    )
    from unrolled.commands import eval as eval_  # the verb `eval`; the name would hide the builtin

    return [
        demo,
        train,
        sample,
        eval_,
        forecast,
        classify,
        translate,
        export,
        quantize,
        diagnose,
        experiment,
        bench,
        data,
    ]


def __getattr__(name: str):
    if name == "COMMANDS":  # the list of verb modules, kept for the tests and tools that read it
        return _commands()
    raise AttributeError(name)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="unrolled",
        description="Recurrent neural networks (RNN, LSTM, GRU) with hand-written, verified BPTT.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"unrolled {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _commands():
        module.register(sub)
    return parser


def error_line(e: BaseException) -> str:
    """The one line that says what went wrong, without errno numbers or codec jargon."""
    if isinstance(e, UnicodeDecodeError):  # a reader that did not name its file: at least say where
        return f"not UTF-8 text (byte 0x{e.object[e.start]:02x} at byte offset {e.start} cannot be decoded)"
    if isinstance(e, OSError) and e.strerror:
        where = e.filename if e.filename is not None else None
        why = e.strerror[0].lower() + e.strerror[1:]
        return f"{where}: {why}" if where is not None else why
    text = str(e).strip()
    if isinstance(e, KeyError) or not text:  # a KeyError's str is the bare key, in quotes
        return f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text.splitlines()[0]


def _diverged(e: BaseException) -> bool:
    train = sys.modules.get("unrolled.train")
    return train is not None and isinstance(e, train.DivergenceError)


def main(argv: list[str] | None = None) -> int:
    old = install_interrupt_handler()  # again: main() may be called by a program that has its own
    _phase["running"] = False
    try:
        return _main(argv)
    except KeyboardInterrupt:
        sys.stderr.write("unrolled: interrupted\n")
        _end_every_rank(EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    finally:
        _phase["running"] = False
        for sig, handler in old.items():  # a program calling main() gets its own handlers back
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _end_every_rank(code: int) -> None:
    """Under several MPI ranks, a rank that fails ends the whole job (its line is already printed), so that
    no other rank waits for it in a collective (see :mod:`unrolled.distributed`)."""
    distributed = sys.modules.get("unrolled.distributed")
    comm = distributed.current() if distributed is not None else None
    if comm is not None and comm.size > 1:
        comm.abort(None, code)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    from unrolled.commands._quick import apply_quick

    apply_quick(args)  # UNROLLED_QUICK (tests only): every --steps/--time/--epochs capped
    try:
        from unrolled import threads

        # The library's thread policy (unrolled.threads): the layers' workers on every core, BLAS and
        # oneDNN on one thread each; UNROLLED_BLAS_THREADS or a command's own --threads sets BLAS's count.
        if os.environ.get("UNROLLED_BLAS_THREADS"):
            threads.set_blas_threads(int(os.environ["UNROLLED_BLAS_THREADS"]))
        else:
            threads.apply_defaults()
        _phase["running"] = True
        return int(args.func(args) or 0)
    except (CLIError, ValueError, TypeError, OSError, RuntimeError, ImportError, KeyError) as e:
        if os.environ.get("UNROLLED_DEBUG"):
            raise
        if _diverged(e):
            msg = error_line(e).replace(": diverged: ", ": ", 1)
            msg = f"at {msg}" if msg.startswith("step ") else msg
            sys.stderr.write(f"unrolled: error: training diverged {msg}\n")  # one write: one line under MPI
            _end_every_rank(EXIT_DIVERGED)
            return EXIT_DIVERGED
        sys.stderr.write(f"unrolled: error: {error_line(e)}\n")
        _end_every_rank(EXIT_USER_ERROR)
        return EXIT_USER_ERROR
