"""Translation: train an encoder–decoder with attention on sentence pairs, translate, evaluate with BLEU.

On the command line (:mod:`unrolled.commands.train_translate`, :mod:`unrolled.commands.translate`,
:mod:`unrolled.commands.eval`): ``unrolled train translate --pairs FILE [--source-col N --target-col N]
... --out DIR`` (or ``--dates N`` for the embedded human-readable-dates → ISO task, no file needed),
``unrolled translate DIR [--beam K] [TEXT ... | < file]`` and ``unrolled eval DIR --pairs FILE`` (corpus
BLEU, token accuracy, exact match, beside the copy-the-source baseline); ``--plot-attention out.png``
draws one sentence's attention.

A model directory is a checkpoint (unrolled.checkpoint) whose meta holds ``"app": "translate"``, the
model config, both vocabularies and the tokenizer; ``heldout.tsv`` beside it holds the pairs kept out of
training, so ``unrolled eval DIR --pairs DIR/heldout.tsv`` scores exactly the held-out part.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unrolled._checks import non_negative_int, one_of, positive_float, positive_int, probability
from unrolled._optional import install_hint
from unrolled.apps.fields import option
from unrolled.seq2seq.bleu import corpus_bleu
from unrolled.seq2seq.decode import Hypothesis, beam_search, greedy_decode
from unrolled.seq2seq.model import ATTENTION, CELLS, Seq2Seq, Seq2SeqConfig
from unrolled.seq2seq.text import MODES, PAD, SPECIALS, Vocab, detokenize, make_batch, tokenize
from unrolled.threads import set_blas_threads

APP = "translate"


@dataclass
class TranslateConfig:
    """The options of ``unrolled train translate`` (its command line is built from these fields)."""

    tokenizer: str = option(
        "auto",
        "tokens: 'word' (words and punctuation) or 'char'; auto: char for --dates, else word",
        choices=("auto", *MODES),
    )
    vocab_size: int = option(
        8000, "largest vocabulary per language, specials included (rarer tokens → <unk>)"
    )
    cell: str = option("lstm", "recurrent cell of encoder and decoder", choices=tuple(CELLS))
    embed_dim: int = option(128, "embedding width (both languages)")
    hidden: int = option(128, "encoder width per direction")
    enc_layers: int = option(1, "stacked encoder layers")
    dec_layers: int = option(1, "stacked decoder layers")
    dec_hidden: int = option(0, "decoder width (0: encoder width × directions; another width adds a bridge)")
    bidirectional: bool = option(True, "bidirectional encoder")
    attention: str = option("general", "attention score ('none': plain encoder-decoder)", choices=ATTENTION)
    input_feeding: bool = option(True, "feed the attentional vector h̃_{t-1} back into the decoder")
    dropout: float = option(0.2, "inverted dropout on the embeddings and before the output layer")
    batch: int = option(64, "sentence pairs per batch")
    lr: float = option(2e-3, "Adam learning rate")
    clip: float = option(5.0, "clip the global gradient norm to this (0: no clipping)")
    steps: int = option(3000, "training steps (batches)")
    time: float = option(0.0, "stop after this many minutes of training as well (0: no time limit)")
    sample_prob: float = option(0.0, "scheduled sampling: probability of feeding the model's own prediction")
    valid_fraction: float = option(0.1, "held-out fraction of the distinct source sentences")
    eval_every: int = option(500, "validate every N steps on the held-out pairs")
    select: str = option(
        "loss",
        "keep the weights of the best held-out: 'loss' (teacher-forced), 'bleu' or 'exact' (match, greedy)",
        choices=("loss", "bleu", "exact"),
    )
    max_len: int = option(60, "longest training sentence in tokens (longer pairs are skipped)")
    seed: int = option(0, "seed of the weights, the split, the batch order and dropout")
    threads: int = option(
        1, "threads of NumPy's BLAS (1 is fastest for these small products on a busy machine)"
    )


# --------------------------------------------------------------------------- data
def split_pairs(
    pairs: list[tuple[str, str]], valid_fraction: float, rng: np.random.Generator
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Hold out ``valid_fraction`` of the *distinct source sentences* with all their translations, so no
    held-out source is ever seen in training (the Tatoeba file has many translations per sentence)."""
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid fraction: expected a number in (0, 1), got {valid_fraction!r}")
    sources = sorted({s for s, _ in pairs})
    if len(sources) < 2:
        raise ValueError(
            f"pairs: need at least 2 distinct source sentences to hold some out, got {len(sources)}"
        )
    n_valid = max(1, round(valid_fraction * len(sources)))
    held = {sources[i] for i in rng.permutation(len(sources))[:n_valid]}
    return [p for p in pairs if p[0] not in held], [p for p in pairs if p[0] in held]


def group_references(pairs: Sequence[tuple[str, str]]) -> tuple[list[str], list[list[str]]]:
    """Distinct sources (first-seen order) and, for each, every target it has in ``pairs``."""
    refs: dict[str, list[str]] = defaultdict(list)
    for s, t in pairs:
        refs[s].append(t)
    return list(refs), list(refs.values())


@dataclass
class Translator:
    """A trained model with its vocabularies and tokenizer: text in, text out."""

    model: Seq2Seq
    src_vocab: Vocab
    tgt_vocab: Vocab
    tokenizer: str

    def encode_pairs(self, pairs: Sequence[tuple[str, str]]):
        src = [self.src_vocab.encode(tokenize(s, self.tokenizer)) for s, _ in pairs]
        tgt = [self.tgt_vocab.encode(tokenize(t, self.tokenizer)) for _, t in pairs]
        return src, tgt

    def source_characters(self) -> set[str]:
        """Every character of the source vocabulary's tokens (the specials and the word tokenizer's space
        marker aside): what the model has seen."""
        # detokenize turns the word tokenizer's space marker back into a space
        return set(detokenize(self.src_vocab.tokens[len(SPECIALS) :], self.tokenizer)) | {" "}

    def check_input(self, sentences: Sequence[str]) -> None:
        """Refuse, in one line, what the model cannot translate: an empty sentence, or one with characters
        it never saw (they would all become ``<unk>``, and the model answers something regardless: a date
        for "Ωmega 12 🎉"). Nothing is refused for an unknown *word* made of known characters.

        Raises
        ------
        ValueError : ``translate: input is empty`` / ``translate: input has characters the model never
            saw: 'Ω', '🎉'`` (``sentence N`` instead of ``input`` when there are several).
        """
        known = self.source_characters()
        for n, sentence in enumerate(sentences, 1):
            which = "input" if len(sentences) == 1 else f"sentence {n}"
            if not sentence.strip():
                raise ValueError(f"translate: {which} is empty: give a sentence to translate")
            unseen = list(dict.fromkeys(c for c in " ".join(sentence.split()) if c not in known))
            if unseen:
                listed = ", ".join(repr(c) for c in unseen)
                raise ValueError(f"translate: {which} has characters the model never saw: {listed}")

    def translate(
        self,
        sentences: Sequence[str],
        beam: int = 1,
        max_len: int | None = None,
        length_penalty: float = 1.0,
        batch_size: int = 64,
        progress: bool = False,
    ) -> list[tuple[str, Hypothesis]]:
        """Translate ``sentences`` (greedy for beam 1); returns (text, hypothesis) per sentence, in order.

        progress : a bar on stderr counting the sentences (shown only when there is more than one batch):
            beam search over a few thousand sentences takes minutes.
        """
        from tqdm.auto import tqdm

        self.model.eval()
        out: list[tuple[str, Hypothesis]] = []
        show = progress and len(sentences) > batch_size
        bar = tqdm(
            total=len(sentences), desc="translating", unit="sentence", file=sys.stderr, disable=not show
        )
        for i in range(0, len(sentences), batch_size):
            chunk = sentences[i : i + batch_size]
            ids = [self.src_vocab.encode(tokenize(s, self.tokenizer)) for s in chunk]
            b = make_batch(ids, [[PAD]] * len(ids))
            n = max_len or 2 * int(b.src_lengths.max()) + 10
            hyps = (
                greedy_decode(self.model, b.src, b.src_lengths, n)
                if beam == 1
                else beam_search(self.model, b.src, b.src_lengths, beam, n, length_penalty)
            )
            out += [(detokenize(self.tgt_vocab.decode(h.tokens), self.tokenizer), h) for h in hyps]
            bar.update(len(chunk))
        bar.close()
        return out

    def loss_and_accuracy(
        self, pairs: Sequence[tuple[str, str]], batch_size: int = 128
    ) -> tuple[float, float]:
        """Teacher-forced mean cross-entropy per target token (nats) and next-token accuracy (with <eos>)."""
        from unrolled.nn import log_softmax

        self.model.eval()
        src, tgt = self.encode_pairs(pairs)
        nll = correct = count = 0.0
        for i in range(0, len(src), batch_size):
            b = make_batch(src[i : i + batch_size], tgt[i : i + batch_size], self.model.dtype)
            logp = log_softmax(self.model.forward(b.src, b.src_lengths, b.tgt_in).astype(np.float64))
            gold = np.take_along_axis(logp, b.tgt_out[..., None], axis=-1)[..., 0]
            nll -= float((gold * b.tgt_mask).sum())
            correct += float(((logp.argmax(-1) == b.tgt_out) * b.tgt_mask).sum())
            count += float(b.tgt_mask.sum())
        return nll / count, correct / count


def evaluate(
    tr: Translator,
    pairs: Sequence[tuple[str, str]],
    beam: int = 1,
    max_len: int | None = None,
    length_penalty: float = 1.0,
    progress: bool = False,
) -> dict[str, Any]:
    """BLEU (references grouped by source sentence), exact match, token accuracy, and the copy baseline.

    progress : a bar on stderr while the sources are decoded (see :meth:`Translator.translate`).
    """
    sources, refs = group_references(pairs)
    t0 = time.perf_counter()
    decoded = tr.translate(
        sources, beam=beam, max_len=max_len, length_penalty=length_penalty, progress=progress
    )
    hyps = [h for h, _ in decoded]
    decode_s = time.perf_counter() - t0
    loss, acc = tr.loss_and_accuracy(pairs)
    return {
        "sentences": len(sources),
        "pairs": len(pairs),
        "bleu": corpus_bleu(hyps, refs).score,
        "copy_bleu": corpus_bleu(sources, refs).score,
        "exact_match": float(np.mean([h in r for h, r in zip(hyps, refs, strict=True)])),
        "token_accuracy": acc,
        "loss": loss,
        "beam": beam,
        "decode_seconds": decode_s,
        "examples": [(s, h, r[0]) for s, h, r in list(zip(sources, hyps, refs, strict=True))[:5]],
    }


# --------------------------------------------------------------------------- saving / loading
def translator_meta(tr: Translator) -> dict[str, Any]:
    """What a model directory needs besides the weights: kind, config, vocabularies, tokenizer."""
    return {
        "app": APP,
        "config": tr.model.config.to_dict(),
        "src_vocab": tr.src_vocab.to_list(),
        "tgt_vocab": tr.tgt_vocab.to_list(),
        "tokenizer": tr.tokenizer,
    }


def save(directory, tr: Translator, meta: dict[str, Any] | None = None) -> None:
    """Save the weights and :func:`translator_meta` (plus ``meta``) as a checkpoint in ``directory``."""
    from unrolled.apps._training import model_dir
    from unrolled.checkpoint import save_checkpoint

    arrays = {f"model/{k}": v for k, v in tr.model.params.items()}
    save_checkpoint(model_dir(directory), arrays, {**(meta or {}), **translator_meta(tr)})


def is_translator(directory) -> bool:
    """Whether ``directory`` holds a model written by ``unrolled train translate`` (reads meta.json only)."""
    try:
        meta = json.loads((Path(directory) / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get("meta"), dict) and meta["meta"].get("app") == APP


def load(directory) -> tuple[Translator, dict[str, Any]]:
    """The translator (eval mode) and checkpoint meta of a directory written by ``train translate``."""
    from unrolled.checkpoint import load_checkpoint

    arrays, meta = load_checkpoint(directory)
    return _translator_from(directory, arrays, meta), meta


def _translator_from(directory, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Translator:
    from unrolled.checkpoint import CheckpointError

    if meta.get("app") != APP:
        what = f"a {meta['app']} model" if isinstance(meta.get("app"), str) else "no translation model"
        raise CheckpointError(f"{directory}: not a translation model (it holds {what})")
    try:
        model = Seq2Seq(Seq2SeqConfig.from_dict(meta["config"]))
        src_vocab, tgt_vocab = Vocab(meta["src_vocab"]), Vocab(meta["tgt_vocab"])
        model.load_params({k[len("model/") :]: v for k, v in arrays.items() if k.startswith("model/")})
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{directory}: invalid translation model ({e})") from None
    if meta.get("tokenizer") not in MODES:
        raise CheckpointError(f"{directory}: unknown tokenizer {meta.get('tokenizer')!r}")
    return Translator(model.eval(), src_vocab, tgt_vocab, meta["tokenizer"])


# --------------------------------------------------------------------------- training
def resume_translator(workdir, source: dict[str, Any]) -> Translator:
    """The translator of the interrupted run in `workdir` (vocabularies, architecture), which must have been
    trained on `source`; :func:`fit` with ``resume=True`` restores the rest (weights, optimizer, step).

    workdir : the Trainer's folder, or a :class:`~unrolled.rundir.RunDir` whose ``train/`` it is."""
    from unrolled.apps._training import trainer_paths
    from unrolled.checkpoint import CheckpointError, load_checkpoint

    workdir = trainer_paths(workdir, TRAINER_SUB)[0]
    last = workdir / "last"
    if not (last / "meta.json").exists():
        raise ValueError(f"--resume: no run to continue in {workdir.parent} (no {last})")
    arrays, meta = load_checkpoint(last)
    if meta.get("data") != source:
        raise CheckpointError(
            f"--resume: {workdir.parent} was trained on {meta.get('data')}, not on {source}"
        )
    return _translator_from(last, arrays, meta)


def build(cfg: TranslateConfig, train_pairs: list[tuple[str, str]]) -> Translator:
    """Vocabularies from the training pairs and a freshly initialised model."""
    src_vocab = Vocab.build((tokenize(s, cfg.tokenizer) for s, _ in train_pairs), cfg.vocab_size)
    tgt_vocab = Vocab.build((tokenize(t, cfg.tokenizer) for _, t in train_pairs), cfg.vocab_size)
    model = Seq2Seq(
        Seq2SeqConfig(
            src_vocab_size=len(src_vocab),
            tgt_vocab_size=len(tgt_vocab),
            embed_dim=cfg.embed_dim,
            cell=cfg.cell,
            hidden_size=cfg.hidden,
            enc_layers=cfg.enc_layers,
            bidirectional=cfg.bidirectional,
            dec_layers=cfg.dec_layers,
            dec_hidden_size=cfg.dec_hidden or None,
            attention=cfg.attention,
            input_feeding=cfg.input_feeding,
            dropout=cfg.dropout,
            seed=cfg.seed,
        )
    )
    return Translator(model, src_vocab, tgt_vocab, cfg.tokenizer)


TRAINER_SUB = "train"  # the Trainer's folder inside a run directory


def fit(
    cfg: TranslateConfig,
    train_pairs: list[tuple[str, str]],
    valid_pairs: list[tuple[str, str]],
    workdir=None,
    progress: bool = True,
    resume: bool = False,
    translator: Translator | None = None,
    meta: dict[str, Any] | None = None,
) -> tuple[Translator, dict[str, Any]]:
    """Teacher-forced training (optionally with scheduled sampling) through :class:`unrolled.train.Trainer`:
    Adam, global-norm clipping, the held-out loss every ``eval_every`` steps, checkpoints ``last`` / ``best``
    and ``metrics.jsonl`` in ``workdir`` (a temporary folder when None), exact ``resume``. Ends with the
    weights of the best held-out loss. Returns the translator (eval mode) and a summary of the run.

    ``workdir`` may be a :class:`~unrolled.rundir.RunDir`: its ``train/`` folder is then used, every path
    checked not to be a symbolic link. Raises :class:`~unrolled.train.DivergenceError` when the run
    diverges: a non-finite weight, or the loss above ln(target vocabulary) + 1 nats (worse than a uniform
    guess) — the held-out loss 3 validations in a row with ``--select loss``, else the training loss
    for ``max(3, eval_every)`` steps in a row.
    """
    import tempfile

    from unrolled.apps._training import MARGIN_NATS, trainer_paths
    from unrolled.checkpoint import load_checkpoint, restore_arrays
    from unrolled.data.batching import batch_order
    from unrolled.optim import Adam
    from unrolled.train import LossBound, Trainer

    # The messages name the command-line option: this config is the command line of `train translate`.
    for name in ("steps", "batch", "eval_every", "max_len", "vocab_size", "embed_dim", "hidden", "threads"):
        positive_int(f"--{name.replace('_', '-')}", getattr(cfg, name))
    probability("--sample-prob", cfg.sample_prob, closed=True)
    one_of("--select", cfg.select, ("loss", "bleu", "exact"))
    non_negative_int("--dec-hidden", cfg.dec_hidden)  # 0 = the encoder's width × directions
    one_of("--tokenizer", cfg.tokenizer, MODES)
    positive_float("--time", cfg.time, allow_zero=True)  # 0 = no time limit
    if not valid_pairs:
        raise ValueError("no held-out pairs to validate on (see --valid-fraction)")
    set_blas_threads(cfg.threads)
    tr = translator if translator is not None else build(cfg, train_pairs)
    src, tgt = tr.encode_pairs(train_pairs)
    keep = [i for i in range(len(src)) if len(src[i]) <= cfg.max_len and len(tgt[i]) <= cfg.max_len]
    if not keep:
        raise ValueError(
            f"pairs: no training pair has at most {cfg.max_len} tokens on both sides (see --max-len)"
        )
    src, tgt = [src[i] for i in keep], [tgt[i] for i in keep]
    lengths = np.array([len(s) for s in src])
    dtype = tr.model.dtype

    def batches(epoch: int) -> list:
        """The batches of one epoch: a pure function of (seed, epoch), so a resumed run sees the same ones."""
        rng = np.random.default_rng([cfg.seed, epoch])
        order = batch_order(lengths, cfg.batch, rng, bucket=True)
        return [make_batch([src[i] for i in idx], [tgt[i] for i in idx], dtype) for idx in order]

    def loss_fn(model: Seq2Seq, b) -> tuple[float, int]:
        loss = model.loss(b.src, b.src_lengths, b.tgt_in, b.tgt_out, b.tgt_mask, cfg.sample_prob)
        return loss, int(b.tgt_mask.sum())

    valid_sources, valid_refs = group_references(valid_pairs)

    def val_fn(model: Seq2Seq) -> float:
        """Lower is better: the loss, or minus BLEU / exact match of greedy translations."""
        if cfg.select == "loss":
            return tr.loss_and_accuracy(valid_pairs)[0]
        hyps = [h for h, _ in tr.translate(valid_sources)]
        if cfg.select == "bleu":
            return -corpus_bleu(hyps, valid_refs).score
        return -float(np.mean([h in r for h, r in zip(hyps, valid_refs, strict=True)]))

    tmp = tempfile.TemporaryDirectory(prefix="unrolled-translate-") if workdir is None else None
    workdir, metrics_path = trainer_paths(tmp.name if tmp is not None else workdir, TRAINER_SUB)
    limit = math.log(len(tr.tgt_vocab)) + MARGIN_NATS
    if cfg.select == "loss":
        bound = LossBound(limit, "val_loss", times=3)
    else:  # the validation value is minus BLEU / exact match: bound the training loss
        bound = LossBound(limit, "loss", times=max(3, cfg.eval_every))
    trainer = Trainer(
        tr.model,
        Adam(tr.model.params, lr=cfg.lr),
        batches,
        loss_fn,
        val_fn=val_fn,
        max_steps=cfg.steps,
        max_time=60.0 * cfg.time if cfg.time > 0 else None,
        clip_norm=cfg.clip if cfg.clip > 0 else None,
        eval_every=cfg.eval_every,
        checkpoint_dir=workdir,
        metrics_path=metrics_path,
        progress=progress,
        max_loss=bound,
        meta={**(meta or {}), **translator_meta(tr), "train_config": asdict(cfg)},
    )
    try:
        result = trainer.fit(resume=resume)
        if (workdir / "best" / "meta.json").exists():
            arrays, _ = load_checkpoint(workdir / "best")
            restore_arrays(tr.model.params, arrays, "model/", what=f"checkpoint {workdir / 'best'}")
    finally:
        if tmp is not None:
            tmp.cleanup()
    tr.model.eval()
    summary = {
        "steps": result.step,
        "epochs": result.epoch,
        "reason": result.reason,
        "train_seconds": _wall(trainer),
        "best_valid": result.best_val_loss,  # the --select quantity: loss, or minus BLEU / exact match
        "train_pairs_used": len(src),
        "valid_curve": [
            [r["step"], r["wall_time"], r["val_loss"]]
            for r in trainer.history
            if "val_loss" in r and "final" not in r
        ],
    }
    return tr, summary


def _wall(trainer) -> float:
    """Training wall time of the whole run (all resumed sessions), as the Trainer recorded it."""
    return max(
        (float(r["wall_time"]) for r in trainer.history if "wall_time" in r), default=trainer.wall_offset
    )


# --------------------------------------------------------------------------- attention plot
def plot_attention(path, source_tokens: list[str], output_tokens: list[str], weights: np.ndarray) -> None:
    """Save the attention matrix (outputs × source tokens) of one sentence as an image."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            f"--plot-attention needs matplotlib: {install_hint('plot', 'matplotlib')}"
        ) from None
    fig, ax = plt.subplots(figsize=(1 + 0.45 * len(source_tokens), 1 + 0.4 * len(output_tokens)))
    ax.imshow(weights, cmap="Greys", vmin=0, vmax=1, aspect="auto")

    def label(t: str) -> str:
        return "␣" if t == " " else t.replace("▁", "")  # a visible space (char tokens), no word marker

    ax.set_xticks(range(len(source_tokens)), [label(t) for t in source_tokens], rotation=90)
    ax.set_yticks(range(len(output_tokens)), [label(t) for t in output_tokens])
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sentence_attention(tr: Translator, sentence: str, hyp: Hypothesis, path) -> None:
    """Save the attention of `hyp`, the translation of `sentence`, as an image (:func:`plot_attention`)."""
    if hyp.attention is None:
        raise ValueError("--plot-attention: this model has no attention (trained with --attention none)")
    src_tokens = tokenize(sentence, tr.tokenizer) + ["<eos>"]
    out_tokens = [tr.tgt_vocab.tokens[i] for i in hyp.tokens]
    plot_attention(path, src_tokens, out_tokens, hyp.attention)
