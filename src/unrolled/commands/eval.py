"""``unrolled eval DIR``: score a trained model on data, by the kind of model DIR holds.

The kind is the ``app`` that wrote the checkpoint's meta.json; :data:`EVALUATORS` maps each kind to its
evaluation, so adding a kind is one entry there, not a patch of another command's parser:

- ``charlm`` (``unrolled train charlm`` or ``unrolled demo``): bits per character on ``--text FILE ...``,
  characters the model has no id for left out or read as <unk> by ``--unknown``;

A run directory is read through the checkpoint :func:`unrolled.resolve.resolve_model` chooses (its
``best/`` when it has one; ``--checkpoint`` chooses), named on standard error.
- ``translate``: BLEU, exact match and token accuracy on ``--pairs FILE``;
- ``forecast`` and ``classify`` models were scored on their test split when trained; eval names the
  command that scores them on new data.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from unrolled._files import check_regular_file
from unrolled.apps import charlm, translate
from unrolled.apps.charlm.lm import plural, scored_predictions
from unrolled.apps.charlm.text import UNKNOWN_POLICIES, UnknownCharacterError, describe_chars
from unrolled.apps.classify import APP as CLASSIFY
from unrolled.apps.forecast import APP as FORECAST
from unrolled.commands._common import (
    CLIError,
    add_checkpoint_option,
    add_quantized_option,
    model_choice,
    quantized,
    say_model,
)
from unrolled.commands._decode import add_columns, add_decode_options, check_decode_options
from unrolled.seq2seq.text import read_pairs


def register(subparsers) -> None:
    ev = subparsers.add_parser(
        "eval",
        help="evaluate a trained model: bits per character (charlm) or BLEU (translate) on your data",
        description="Evaluate a trained model on data, by the kind of model DIR holds. A character-level "
        "model (from `unrolled train charlm` or `unrolled demo`) is scored on UTF-8 text (--text): the mean "
        "negative log-likelihood of each next character, in bits per character (and nats). A translation "
        "model (from `unrolled train translate`) is scored on tab-separated pairs (--pairs): corpus BLEU, "
        "exact match and token accuracy, beside the copy-the-source baseline.",
    )
    ev.add_argument("dir", metavar="DIR", help="a model directory")
    add_checkpoint_option(ev)
    add_quantized_option(ev)
    ev.add_argument(
        "--text",
        nargs="+",
        metavar="FILE",
        action="extend",
        help="character-level models: UTF-8 text file(s) to evaluate on, read one after the other",
    )
    ev.add_argument(
        "--unknown",
        choices=UNKNOWN_POLICIES,
        default="error",
        help="character-level models: what becomes of a character the model has no id for: error "
        "(default: name them), skip (leave them out: the text is scored as if they were absent), map "
        "(read each one as <unk>; predictions of <unk> are not scored; models trained before <unk> "
        "existed have no such id: use skip)",
    )
    ev.add_argument(
        "--pairs",
        metavar="FILE",
        help="translation models: BLEU, exact match and token accuracy on these tab-separated pairs",
    )
    add_columns(ev)
    add_decode_options(ev)
    ev.set_defaults(func=run)


def model_kind(directory) -> str | None:
    """The ``app`` named by the meta.json of `directory` (for a run directory, of the checkpoint
    :func:`unrolled.resolve.resolve_model` chooses); None when there is no readable meta.json naming one.
    Reads meta.json only."""
    from unrolled.resolve import resolve_model

    try:
        d = resolve_model(directory).path
    except ValueError:
        return None
    try:
        meta = json.loads((Path(d) / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(meta, dict) and isinstance(meta.get("meta"), dict):
        app = meta["meta"].get("app")
        return app if isinstance(app, str) else None
    return None


def _charlm(args: argparse.Namespace) -> int:
    choice = model_choice(args, args.dir)
    model, vocab, _ = charlm.load(choice.path)
    model = quantized(args, model)
    if not args.text:
        raise ValueError("eval: a character-level model needs --text FILE")
    for path in args.text:
        check_regular_file(path, "--text")
    try:
        corpus = charlm.load_corpus(args.text, vocab, args.unknown)
    except UnknownCharacterError as e:
        raise CLIError(
            e.message(
                "score the text with --unknown skip (leave them out)"
                + (" or --unknown map (read them as <unk>)" if vocab.unk_id is not None else "")
            )
        ) from None
    ignore = vocab.unk_id if corpus.unknown == "map" else None
    scored = scored_predictions(corpus.ids, ignore)
    if scored < 1:
        raise CLIError(f"--text: no character to score ({plural(corpus.n_unknown, 'character')} unknown)")
    say_model(choice)
    nats = charlm.evaluate(model, corpus.ids, ignore_id=ignore, progress=True)
    print(f"{charlm.bits(nats):.4f} bits per character ({nats:.4f} nats) over {scored:,} predictions")
    if corpus.counts:
        if corpus.unknown == "skip":
            how = "left out (the text was scored as if they were absent)"
        else:
            how = "read as <unk>; the predictions of <unk> were not scored"
        print(
            f"--unknown {corpus.unknown}: {plural(corpus.n_unknown, 'character')} of "
            f"{plural(len(corpus.counts), 'kind')} the model has no id for {how}: "
            + describe_chars(corpus.counts)
        )
    return 0


def _translate(args: argparse.Namespace) -> int:
    if args.pairs is None:
        raise ValueError("eval: a translation model needs --pairs FILE")
    choice = model_choice(args, args.dir)
    tr, _ = translate.load(choice.path)
    check_decode_options(args)
    pairs = read_pairs(args.pairs, args.source_col, args.target_col)
    say_model(choice)
    res = translate.evaluate(tr, pairs, args.beam, args.max_len, args.length_penalty)
    how = "greedy" if args.beam == 1 else f"beam {args.beam}"
    print(
        f"BLEU {res['bleu']:.2f} ({how}; copying the source: {res['copy_bleu']:.2f}) over {res['sentences']} "
        f"source sentences ({res['pairs']} pairs, references grouped by source), "
        f"exact match {100 * res['exact_match']:.1f}%, token accuracy {100 * res['token_accuracy']:.1f}% "
        f"(teacher-forced), loss {res['loss']:.3f} nats/token"
    )
    if args.plot_attention:
        src = translate.group_references(pairs)[0][0]
        hyp = tr.translate([src], args.beam, args.max_len, args.length_penalty)[0][1]
        translate.plot_sentence_attention(tr, src, hyp, args.plot_attention)
        print(f"attention of {src!r} saved to {args.plot_attention}", file=sys.stderr)
    return 0


def _scored_elsewhere(kind: str, command: str) -> Callable[[argparse.Namespace], int]:
    def refuse(args: argparse.Namespace) -> int:
        raise ValueError(
            f"eval: {args.dir} holds a {kind} model (its test scores are in its meta.json); "
            f"use `{command}` on new data"
        )

    return refuse


# The evaluation of each kind of model directory, by the "app" of its meta.json.
EVALUATORS: dict[str, Callable[[argparse.Namespace], int]] = {
    charlm.APP: _charlm,
    translate.APP: _translate,
    FORECAST: _scored_elsewhere(FORECAST, "unrolled forecast DIR --holdout"),
    CLASSIFY: _scored_elsewhere(CLASSIFY, "unrolled classify DIR FILE"),
}


def run(args: argparse.Namespace) -> int:
    model_choice(args, args.dir)  # a missing DIR or a --checkpoint it lacks: refused before anything else
    kind = model_kind(args.dir)
    if args.pairs is not None and kind != translate.APP:
        raise ValueError(f"eval: {args.dir} is not a translation model (--pairs needs one)")
    # No kind (no model here, a corrupt meta.json, a bare checkpoint): the character-level loader, the
    # default of `eval`, says in one line what is wrong with DIR.
    return EVALUATORS.get(kind, _charlm)(args)
