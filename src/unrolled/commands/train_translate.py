"""``unrolled train translate``: train an encoder–decoder with attention on tab-separated sentence pairs or
on the built-in dates task, and score the held-out pairs (:mod:`unrolled.apps.translate`)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from unrolled.apps.translate import (
    APP,
    TranslateConfig,
    evaluate,
    fit,
    resume_translator,
    save,
    split_pairs,
)
from unrolled.apps.translate.dates import date_pairs
from unrolled.commands._common import add_run_options, open_out
from unrolled.commands._decode import add_columns
from unrolled.commands._options import add_config_arguments, config_from_args
from unrolled.seq2seq.text import read_pairs


def register(kinds) -> None:
    """``translate`` among the kinds of ``unrolled train``."""
    train = kinds.add_parser(
        "translate",
        help="train an encoder-decoder with attention on sentence pairs",
        description="Train a sequence-to-sequence model (RNN/LSTM/GRU encoder, attention, decoder) on "
        "tab-separated sentence pairs, or on the built-in dates task (--dates N: human-readable dates to ISO "
        "dates, no file needed). A fraction of the distinct source sentences is held out (written to "
        "DIR/heldout.tsv) for validation; DIR keeps the weights of the best validation loss.",
    )
    data = train.add_mutually_exclusive_group(required=True)
    data.add_argument("--pairs", metavar="FILE", help="UTF-8 file, one tab-separated sentence pair per line")
    data.add_argument(
        "--dates", type=int, metavar="N", help="generate N date pairs instead of reading a file"
    )
    add_columns(train)
    train.add_argument("--out", required=True, metavar="DIR", help="directory for the model")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    add_run_options(train, "the interrupted run (same data and options)")
    add_config_arguments(train, TranslateConfig)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(TranslateConfig, args)
    if cfg.tokenizer == "auto":
        cfg.tokenizer = "char" if args.dates is not None else "word"
    if args.dates is not None and (args.source_col, args.target_col) != (1, 2):
        raise ValueError("--source-col / --target-col: only for --pairs (the dates task has no columns)")
    if args.pairs is not None:
        pairs = read_pairs(args.pairs, args.source_col, args.target_col)
        source = {"pairs": str(args.pairs), "source_col": args.source_col, "target_col": args.target_col}
    else:
        if args.dates < 10:
            raise ValueError(f"--dates: expected at least 10 pairs, got {args.dates}")
        pairs = date_pairs(args.dates, np.random.default_rng(cfg.seed), "train")
        source = {"dates": args.dates}
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(2)[0])
    train, valid = split_pairs(pairs, cfg.valid_fraction, rng)
    with open_out(args, APP) as run_dir:  # the Trainer writes in DIR/train, the model in DIR
        return _train(args, cfg, run_dir, train, valid, source)


def _train(args, cfg: TranslateConfig, run_dir, train: list, valid: list, source: dict) -> int:
    out = Path(args.out)
    translator = resume_translator(run_dir, source) if args.resume else None
    heldout = run_dir.write_text("heldout.tsv", "".join(f"{s}\t{t}\n" for s, t in valid))
    print(f"{len(train)} training pairs, {len(valid)} held out (in {out / heldout.name})", file=sys.stderr)
    tr, summary = fit(
        cfg,
        train,
        valid,
        workdir=run_dir,
        progress=not args.quiet and sys.stderr.isatty(),
        resume=args.resume,
        translator=translator,
        meta={"data": source},
    )
    save(run_dir, tr, {"data": source, "train_config": asdict(cfg), "summary": summary})
    res = evaluate(tr, valid, beam=1, progress=not args.quiet)
    print(
        f"held out: BLEU {res['bleu']:.2f} (greedy; copying the source: {res['copy_bleu']:.2f}), "
        f"exact match {100 * res['exact_match']:.1f}%, token accuracy {100 * res['token_accuracy']:.1f}%, "
        f"{summary['steps']} steps in {summary['train_seconds']:.0f} s, "
        f"{tr.model.num_parameters():,} parameters; saved to {out}"
    )
    return 130 if summary["reason"] == "interrupted" else 0  # as Ctrl-C: continue with --resume
