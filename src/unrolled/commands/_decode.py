"""The decoding and pairs-file options that ``unrolled translate`` and ``unrolled eval`` share."""

from __future__ import annotations

import argparse

from unrolled._checks import positive_int


def add_decode_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--beam", type=int, default=1, metavar="K", help="beam size (default: 1, greedy)")
    p.add_argument("--max-len", type=int, metavar="N", help="most output tokens (default: 2 × source + 10)")
    p.add_argument(
        "--length-penalty",
        type=float,
        default=1.0,
        metavar="A",
        help="beam search ranks by log p / length^A (default: 1.0; 0 = plain model score)",
    )
    p.add_argument("--plot-attention", metavar="PNG", help="save the attention matrix of the first sentence")


def check_decode_options(args: argparse.Namespace) -> None:
    positive_int("--beam", args.beam)
    if args.max_len is not None:
        positive_int("--max-len", args.max_len)


def add_columns(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--source-col", type=int, default=1, metavar="N", help="source column, 1-based (default: 1)"
    )
    p.add_argument(
        "--target-col", type=int, default=2, metavar="N", help="target column, 1-based (default: 2)"
    )
