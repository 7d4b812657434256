"""``unrolled translate DIR [TEXT ...]``: translate TEXT, or each line of standard input, with a model from
``unrolled train translate`` (:mod:`unrolled.apps.translate`); one translation per line."""

from __future__ import annotations

import argparse
import math
import sys

from unrolled._optional import require
from unrolled.apps.translate import load, plot_sentence_attention
from unrolled.commands._common import add_checkpoint_option, model_choice, say_model
from unrolled.commands._decode import add_decode_options, check_decode_options


def register(subparsers) -> None:
    tr = subparsers.add_parser(
        "translate",
        intermixed=True,  # options may come between DIR and TEXT: `unrolled translate DIR --beam 5 TEXT`
        help="translate sentences with a model from 'unrolled train translate'",
        description="Translate TEXT (or each line of standard input) and print one translation per line.",
    )
    tr.add_argument("dir", metavar="DIR", help="directory written by 'unrolled train translate'")
    tr.add_argument("text", nargs="*", metavar="TEXT", help="the sentence (default: lines of standard input)")
    add_checkpoint_option(tr)
    add_decode_options(tr)
    tr.add_argument(
        "--verbose",
        action="store_true",
        help="print the confidence of every translation on stderr (a single TEXT always gets it)",
    )
    tr.set_defaults(func=run)


def _read_sentences(args: argparse.Namespace) -> list[str]:
    if args.text:
        return [" ".join(args.text)]
    if sys.stdin.isatty():
        raise ValueError("no text: give TEXT or pipe sentences, one per line, on standard input")
    lines = [line.strip() for line in sys.stdin.read().splitlines()]
    lines = [s for s in lines if s]
    if not lines:
        raise ValueError("no text: standard input holds no sentence")
    return lines


def confidence_line(hyp) -> str:
    """The model's confidence in one translation: the mean probability of its output tokens,
    exp(log p(y | x) / n), with log p beside it; flagged when below one half."""
    n = max(len(hyp.tokens), 1)
    mean_p = math.exp(hyp.score / n)
    line = f"confidence {mean_p:.2f} (mean probability of the {n} output tokens; log p = {hyp.score:.2f})"
    if mean_p < 0.5:
        line += ": low, the input may be unlike what the model learned"
    return line


def run(args: argparse.Namespace) -> int:
    if args.plot_attention:  # before the model is loaded and the sentences decoded
        require("--plot-attention", "matplotlib", "plot")
    choice = model_choice(args, args.dir)
    tr, _ = load(choice.path)
    check_decode_options(args)
    sentences = _read_sentences(args)
    tr.check_input(sentences)
    say_model(choice)
    results = tr.translate(
        sentences,
        beam=args.beam,
        max_len=args.max_len,
        length_penalty=args.length_penalty,
        progress=True,
    )
    show_confidence = args.verbose or bool(args.text)
    for text, hyp in results:
        print(text, flush=show_confidence)  # flushed: the line and its confidence arrive in order
        if show_confidence:
            print(confidence_line(hyp), file=sys.stderr, flush=True)
    if args.plot_attention:
        plot_sentence_attention(tr, sentences[0], results[0][1], args.plot_attention)
        print(f"attention of the first sentence saved to {args.plot_attention}", file=sys.stderr)
    return 0
