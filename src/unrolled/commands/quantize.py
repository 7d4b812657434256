"""``unrolled quantize DIR --to int8 --out QDIR``: a copy of a trained model with its recurrent weights
quantised (:func:`unrolled.quantize`), written as a checkpoint directory that ``sample``, ``eval``,
``forecast`` and ``classify`` read like any other."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from unrolled.commands._common import (
    QUANTIZED_KINDS,
    CLIError,
    add_checkpoint_option,
    model_choice,
    say_model,
)


def register(subparsers) -> None:
    q = subparsers.add_parser(
        "quantize",
        help="write a copy of a model with int8 or bf16 recurrent weights, for inference",
        description="Quantise the recurrent weights (W_xh, W_hh) of a trained model — int8 per row with a "
        "float32 scale, or bf16 — and write the copy to --out as a checkpoint directory that sample, eval, "
        "forecast and classify read. The copy is for inference only (it cannot be trained further); "
        "`--quantized` on those commands does the same on load, without writing anything.",
    )
    q.add_argument("model", metavar="DIR", help="a run or checkpoint directory of a trained model")
    q.add_argument("--to", required=True, choices=QUANTIZED_KINDS, help="the format of the weights")
    q.add_argument("--out", required=True, metavar="QDIR", help="new directory for the quantised model")
    add_checkpoint_option(q)
    q.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unrolled.checkpoint import is_checkpoint, load_model, save_model
    from unrolled.quantization import quantize, quantized_kind

    out = Path(args.out)
    if out.is_symlink():  # a link (even to an empty directory, or dangling) would write elsewhere
        raise CLIError(f"--out {out}: is a symbolic link (choose a new directory)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):  # a file, a FIFO, a full directory
        raise CLIError(f"--out {out}: exists and is not an empty directory (choose a new one)")
    choice = model_choice(args, args.model)
    if not is_checkpoint(choice.path):
        raise CLIError(f"{args.model}: holds no model (no meta.json; expected a run or checkpoint directory)")
    model, meta = load_model(choice.path)
    have = quantized_kind(model)
    if have is not None:
        raise CLIError(f"{args.model}: the model is quantised already ({have}); quantise the float model")
    if model.dtype.name != "float32":
        raise CLIError(f"{args.model}: a {model.dtype.name} model; only float32 models are quantised")
    say_model(choice)
    small = quantize(model, args.to)
    keep = {k: v for k, v in meta.items() if k != "config"}
    made = not out.exists()
    try:
        save_model(out, small, {**keep, "quantized_from": str(choice.path)})
    except (OSError, ValueError) as e:  # leave no half-written model behind: --out as it was
        _clear(out, made)
        raise CLIError(f"--out {out}: could not write the model ({e})") from e
    q = small.rnn.quantized
    before = sum(v.nbytes for k, v in model.rnn.params.items() if k in q.stored)
    print(
        f"wrote {out}: {args.to} recurrent weights, {before:,} -> {q.nbytes():,} bytes "
        f"({len(q.stored)} matrices; the embedding, biases and output layer stay float32)"
    )
    return 0


def _clear(out: Path, made: bool) -> None:
    """Remove what a failed save wrote: the directory if this command made it, else its contents (it was
    empty before)."""
    if made:
        shutil.rmtree(out, ignore_errors=True)
    elif out.is_dir():
        for p in out.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink()
