"""``unrolled train charlm``: train (or ``--resume``) a character-level language model on UTF-8 text
(:mod:`unrolled.apps.charlm`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from unrolled import distributed
from unrolled._files import check_regular_file
from unrolled.apps.charlm import APP, CharLMConfig, fit, report, resume_config
from unrolled.apps.charlm.text import UNKNOWN_POLICIES, UnknownCharacterError, Vocabulary
from unrolled.checkpoint import CheckpointError, load_checkpoint
from unrolled.commands._common import CLIError, add_run_options, open_out
from unrolled.commands._options import add_config_options, given_options
from unrolled.rundir import run_kind


def register(kinds) -> None:
    """``charlm`` among the kinds of ``unrolled train``."""
    train = kinds.add_parser(
        "charlm",
        help="train a character-level language model on UTF-8 text",
        description="Train a character-level language model (embedding → RNN/LSTM/GRU stack → softmax over "
        "the characters) with truncated BPTT and Adam. The vocabulary is built from the training text and "
        "saved with the model; the end of the text is held out for validation, reported in bits per "
        "character. DIR holds the latest checkpoint; --resume continues it.",
    )
    train.add_argument(
        "--text",
        nargs="+",
        metavar="FILE",
        action="extend",
        help="UTF-8 text file(s) to learn from, read one after the other (any size: streamed); "
        "with --resume, defaults to the run's own texts",
    )
    train.add_argument(
        "--out", required=True, metavar="DIR", help="directory for the model and its checkpoint"
    )
    add_run_options(
        train, "the run saved in DIR (same architecture; --steps/--time are totals of the whole run)"
    )
    train.add_argument(
        "--unknown",
        choices=UNKNOWN_POLICIES,
        help="with --resume: what becomes of a character of --text that the run's vocabulary (fixed when "
        "the run started) has no id for: error (the default: name them), skip (leave them out), map "
        "(train on them as <unk>; runs from before <unk> existed have none)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_options(train, CharLMConfig, exclusive=("steps", "time"))


def run(args: argparse.Namespace) -> int:
    if not args.resume and not args.text:  # before --out is touched
        raise CLIError("--text: give the UTF-8 text file(s) to learn from")
    if not args.resume and args.unknown is not None:
        raise CLIError(
            f"--unknown {args.unknown}: only with --resume (a new run learns every character of its texts)"
        )
    for path in args.text or ():  # a device, FIFO or missing file: one line, before --out is touched
        check_regular_file(path, "--text")
    CharLMConfig(**{k: v for k, v in given_options(args, CharLMConfig).items() if k not in ("steps", "time")})
    # A demo run from before run.json was its own kind ("demo"); newer demos are charlm runs.
    kind = "demo" if args.resume and run_kind(args.out) == "demo" else APP
    comm = distributed.world()  # several ranks under mpiexec / srun: a data-parallel run
    if not comm.is_root:  # rank 0 alone opens, locks and writes --out; the others read it once it holds it
        comm.barrier("the start (rank 0 opening --out)")
        return _run(args, Path(args.out), comm)
    with open_out(args, kind) as run_dir:
        comm.barrier("the start (rank 0 opening --out)")
        return _run(args, run_dir, comm)


def _run(args: argparse.Namespace, run_dir, comm) -> int:
    given = given_options(args, CharLMConfig)
    if "time" in given:  # --steps and --time exclude each other on the command line
        given["steps"] = None
    elif "steps" in given:
        given["time"] = None
    out = Path(args.out)
    last = run_dir.path("last") if comm.is_root else out / "last"
    vocab = None
    if args.resume:
        if not (last / "meta.json").exists():
            raise CLIError(f"--resume: {out} holds no run to continue (no checkpoint {last})")
        _, meta = load_checkpoint(last)
        if meta.get("app") != APP:
            raise CheckpointError(f"{out}: not a character-level language model run")
        cfg = resume_config(CharLMConfig.from_dict(meta["charlm"]), given, out)
        texts = args.text or meta["texts"]
        vocab = Vocabulary.from_json(meta["vocab"])
        extra = {"demo": True} if meta.get("demo") else None  # a resumed demo stays one
        done, minutes = meta["trainer"]["step"], meta["trainer"]["wall_time"] / 60
        if cfg.steps is not None and cfg.steps <= done:
            raise CLIError(
                f"--resume: the run in {out} is at step {done} of --steps {cfg.steps}; give more --steps"
            )
        if cfg.time is not None and cfg.time <= minutes:
            raise CLIError(
                f"--resume: the run in {out} has trained {minutes:.2f} of --time {cfg.time:g} minutes; "
                "give more --time"
            )
    else:
        cfg, texts, extra = CharLMConfig(**given), args.text, None
    unknown = args.unknown or "error"
    try:
        summary = fit(
            cfg, texts, run_dir, vocab=vocab, resume=args.resume, progress=not args.quiet, extra_meta=extra,
            unknown=unknown, comm=comm,
        )  # fmt: skip
    except UnknownCharacterError as e:
        options = "--unknown skip (leave them out)" + (
            " or --unknown map (train on them as <unk>)" if e.vocab.unk_id is not None else ""
        )
        raise CLIError(
            e.message(
                f"the run's vocabulary is fixed: continue with {options}, or learn them in a new run "
                "on all your texts (another --out)"
            )  # fmt: skip
        ) from None
    if comm.is_root:
        report(summary)
    return 130 if summary.reason == "interrupted" else 0  # the shell's code for "stopped by Ctrl-C"
