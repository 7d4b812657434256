"""English → French on the 5,000 Tatoeba pairs: corpus BLEU on a held-out 10%, greedy and beam 5, beside
copying the source; training time and model size.

The test part is 10% of the *distinct English sentences* (with all their translations), chosen by the
seed, so no test sentence is seen in training; BLEU uses every French translation of a test sentence as a
reference (multi-reference corpus BLEU, sacrebleu's 13a tokenisation). Another 5% of the remaining
sentences is the validation part: the model kept is the one with the best validation BLEU (greedy; the
loss with --select loss; checked every --eval-every steps), so the test sentences play no part in
training or model selection.

    .venv/bin/python benchmarks/seq2seq_eng_fra.py --minutes 10 --out /tmp/engfra

Prints one JSON line with the results (and saves the model when --out is given).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from unrolled.apps.translate import TranslateConfig, evaluate, fit, save, split_pairs
from unrolled.seq2seq.text import read_pairs

DATA = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "seq2seq" / "eng-fra-tatoeba-subset.txt"
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="training time budget (default 10)")
    ap.add_argument("--steps", type=int, default=100000, help="most training steps")
    ap.add_argument("--cell", default="lstm")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--embed-dim", type=int, default=128)
    ap.add_argument("--attention", default="general")
    ap.add_argument("--dropout", type=float, default=0.4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--select", default="bleu", help="model selection on the validation part: bleu or loss")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="save the model here")
    args = ap.parse_args(argv)
    if not DATA.exists():
        print(f"{DATA} is missing (it lives beside the repository, in ../shared/data)", file=sys.stderr)
        return 2
    pairs = read_pairs(DATA)
    cfg = TranslateConfig(
        tokenizer="word",
        cell=args.cell,
        hidden=args.hidden,
        embed_dim=args.embed_dim,
        attention=args.attention,
        dropout=args.dropout,
        lr=args.lr,
        batch=args.batch,
        steps=args.steps,
        time=args.minutes,
        eval_every=args.eval_every,
        select=args.select,
        seed=args.seed,
    )
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(2)[0])
    train, test = split_pairs(pairs, 0.1, rng)
    train, valid = split_pairs(train, 0.05, rng)  # model selection never sees the test sentences
    tr, summary = fit(cfg, train, valid, progress=False)
    if args.out:
        save(args.out, tr, {"benchmark": "eng-fra"})
    greedy = evaluate(tr, test, beam=1)
    beam5 = evaluate(tr, test, beam=5)
    result = {
        "train_pairs": len(train),
        "valid_pairs": len(valid),
        "test_pairs": len(test),
        "test_sources": greedy["sentences"],
        "bleu_greedy": round(greedy["bleu"], 2),
        "bleu_beam5": round(beam5["bleu"], 2),
        "bleu_copy_source": round(greedy["copy_bleu"], 2),
        "exact_match_greedy": round(greedy["exact_match"], 4),
        "exact_match_beam5": round(beam5["exact_match"], 4),
        "token_accuracy": round(greedy["token_accuracy"], 4),
        "test_loss": round(greedy["loss"], 4),
        "steps": summary["steps"],
        "best_valid": summary["best_valid"],
        "train_seconds": round(summary["train_seconds"], 1),
        "decode_seconds_greedy": round(greedy["decode_seconds"], 2),
        "decode_seconds_beam5": round(beam5["decode_seconds"], 2),
        "parameters": tr.model.num_parameters(),
        "src_vocab": len(tr.src_vocab),
        "tgt_vocab": len(tr.tgt_vocab),
        "valid_curve": [[n, round(w, 1), round(v, 4)] for n, w, v in summary["valid_curve"]],
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "examples_beam5": beam5["examples"],
    }
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
