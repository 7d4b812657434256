"""Character-level language model: predict the next character from the previous ones, then generate text.

The model is :class:`~unrolled.models.SequenceModel` over token ids — embedding → recurrent stack →
Linear head over the V characters of the vocabulary — trained to minimise

    L = −(1/N) Σ_t log p(x_{t+1} | x_1 … x_t)        (nats per character; bits = nats / ln 2)

with truncated BPTT: the text is cut into ``batch`` contiguous streams that are walked ``seq_len``
characters at a time, the state carried from chunk to chunk and the gradient cut at each boundary.

A trained model is a checkpoint directory (:mod:`unrolled.checkpoint`) whose meta holds ``app: charlm``,
the model's architecture, this run's :class:`CharLMConfig`, the vocabulary and the training texts.

Memory. A run of :func:`fit` on N characters over a vocabulary of V, with P float32 parameters, B
streams of T = ``seq_len`` steps, L layers of H units and an embedding of E, peaks at most at
(:func:`memory_bound`, in bytes, beyond R0, the interpreter with NumPy and the kernels, ≈ 220 MB)::

    s·N                       the text's ids (s = 1 byte per character for V ≤ 256, 2 for V ≤ 65,536, else 4)
  + 64·P                      parameters, gradients, Adam's two moments, a checkpoint being serialised
  + 12·B·T·V                  one training batch's logits: logits, log p → gradient, one temporary (float32)
  + 64·B·T·(H·L + E)          the recurrent stack's activations kept for BPTT, and their gradients
  + 16 MiB + 48·64·200·(H·L + E)    validation: a block of logits, a chunk of 64 streams × 200 steps
  + 1 KiB·V + 32 MiB          the vocabulary's Python objects; reading the text 1 MiB at a time

Nothing else grows with N or V: the batches are cut from the ids on demand (:class:`~unrolled.tbptt.
TokenStreams`) and validation scores the logits in blocks (:func:`evaluate`). Measured peaks are below
the bound (tests/apps/test_charlm_memory.py): a 100 MB text with ``--batch 1 --seq-len 1`` ≈ R0 + 100 MB; a
70,000-character alphabet ≈ R0 + 100 MB.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unrolled import config
from unrolled._checks import one_of, positive_float, positive_int, probability
from unrolled.apps.charlm.text import (
    MAX_VOCAB,
    UNKNOWN_POLICIES,
    TextError,
    UnknownCharacterError,
    Vocabulary,
    check_trainable,
    check_unknown_policy,
    describe_chars,
    encode_texts,
    scan_texts,
    split_validation,
)
from unrolled.apps.fields import (
    cell_variants,
    check_cell_variants,
    layer_norm_option,
    option,
    peephole_option,
    proj_size_option,
    zoneout_option,
)
from unrolled.models import ModelConfig, SequenceModel
from unrolled.threads import set_blas_threads

APP = "charlm"
LN2 = math.log(2.0)


@dataclass
class CharLMConfig:
    """One training run of a character-level language model: the options of ``unrolled train charlm``.

    The command line is built from these fields (``seq_len`` → ``--seq-len``), so every default lives here.
    """

    cell: str = option("lstm", "recurrent cell", choices=("lstm", "gru", "rnn", "mingru", "minlstm"))
    layers: int = option(2, "number of stacked recurrent layers")
    hidden: int = option(256, "hidden units per layer")
    embed: int = option(64, "width of the learned character embedding")
    dropout: float = option(0.0, "dropout probability between stacked layers and before the output layer")
    layer_norm: bool = layer_norm_option()
    peephole: bool = peephole_option()
    proj_size: int = proj_size_option()
    zoneout: float = zoneout_option()
    seq_len: int = option(100, "truncated BPTT length: characters the gradient flows back through per chunk")
    batch: int = option(32, "parallel streams of text per training step (the batch size)")
    steps: int | None = option(
        2000, "total optimizer steps of the run; with --resume, the step count to continue to", type=int
    )
    time: float | None = option(
        None,
        "train for this many minutes of wall time instead of a number of steps (with --resume: the "
        "total of the whole run, which continues until it is reached)",
        type=float,
        metavar="MINUTES",
    )
    lr: float = option(2e-3, "Adam learning rate")
    schedule: str = option(
        "constant",
        "learning-rate schedule: constant, or cosine (lr·½(1 + cos(π·step/steps)), decaying to 0 at --steps; "
        "needs --steps)",
        choices=("constant", "cosine"),
    )
    clip: float = option(5.0, "clip the gradient to this global L2 norm (0 = no clipping)")
    seed: int = option(0, "seed of the initial weights and the dropout masks")
    val_fraction: float = option(0.1, "fraction of the text (its end) held out for validation")
    val_every: int = option(200, "validate every this many steps (and at the end)")
    threads: int = option(
        1, "threads of NumPy's BLAS; 1 is fastest for these small matrix products, by far on a busy machine"
    )
    val_chars: int = option(
        200_000,
        "validation reads at most this many characters of the validation part (its beginning), "
        "so that validating a big text stays cheap; `unrolled eval` reads a whole text",
    )

    def __post_init__(self) -> None:
        # The messages name the command-line option: this config is the command line of `train charlm`.
        positive = ("layers", "hidden", "embed", "seq_len", "batch", "val_every", "val_chars", "threads")
        for name in positive:
            positive_int(f"--{name.replace('_', '-')}", getattr(self, name))
        one_of("--cell", self.cell, ("lstm", "gru", "rnn", "mingru", "minlstm"))
        one_of("--schedule", self.schedule, ("constant", "cosine"))
        if self.schedule == "cosine" and self.steps is None:
            raise ValueError("--schedule cosine: needs --steps (the learning rate decays to 0 over them)")
        if self.steps is not None:
            positive_int("--steps", self.steps)
        if self.time is not None:
            positive_float("--time", self.time)
        probability("--dropout", self.dropout)
        check_cell_variants(self)
        positive_float("--lr", self.lr)
        positive_float("--clip", self.clip, allow_zero=True)  # 0 = no clipping
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"--val-fraction: expected a number in (0, 1), got {self.val_fraction!r}")

    def model_config(self, vocab_size: int) -> ModelConfig:
        """The :class:`ModelConfig` of this run's model over a vocabulary of `vocab_size` characters."""
        return ModelConfig(
            input="tokens",
            vocab_size=vocab_size,
            embed_dim=self.embed,
            cell=self.cell,
            hidden_size=self.hidden,
            num_layers=self.layers,
            dropout=self.dropout,
            output_dropout=self.dropout,
            seed=self.seed,
            **cell_variants(self),
        )

    def to_dict(self) -> dict[str, Any]:
        return config.to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CharLMConfig:
        # unknown fields dropped: a run saved by a version with more options still resumes
        return config.from_dict(cls, d, "a character-level language model", ignore_unknown=True)


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Corpus:
    """Texts encoded to ids: ``ids`` (N,) in ``vocab.dtype``, and where they came from.

    ``unknown`` is the policy the texts were read with (see :mod:`unrolled.apps.charlm.text`), ``counts``
    the characters outside the vocabulary that it skipped or mapped to <unk>, with how often each."""

    vocab: Vocabulary
    ids: np.ndarray
    paths: tuple[str, ...]
    unknown: str = "error"
    counts: Counter = dataclasses.field(default_factory=Counter)

    @property
    def n_unknown(self) -> int:
        """Characters of the texts skipped or mapped to <unk>."""
        return sum(self.counts.values())


def load_corpus(paths, vocab: Vocabulary | None = None, unknown: str = "error") -> Corpus:
    """Read UTF-8 texts by streaming (see :mod:`unrolled.apps.charlm.text`).

    Without `vocab`, the texts must be trainable (not empty, at least two distinct characters) and
    their characters, with <unk>, become the vocabulary. With it, `unknown` says what becomes of a
    character outside it: ``"error"`` raises :class:`~unrolled.apps.charlm.text.UnknownCharacterError`
    naming every such character, ``"skip"`` leaves them out, ``"map"`` reads them as <unk> (refused for a
    vocabulary without one).
    """
    paths = [str(p) for p in paths]
    check_unknown_policy(unknown, vocab)
    stats = scan_texts(paths)
    if vocab is None:
        check_trainable(stats, paths)
        vocab = Vocabulary.from_chars(stats.chars, unk=True)
    else:
        for p, n in zip(paths, stats.lengths, strict=True):
            if n == 0:
                raise TextError(f"{p}: the file is empty")
        missing = sorted(stats.chars - set(vocab.text_chars))
        if missing and unknown == "error":
            raise UnknownCharacterError(", ".join(paths), missing, vocab)
    counts: Counter = Counter()
    ids = encode_texts(paths, vocab, stats.lengths, unknown=unknown, counts=counts)
    if len(ids) < 2:
        raise TextError(
            f"{', '.join(paths)}: only one character{' known' if counts else ''}; nothing to predict"
        )
    return Corpus(vocab, ids, tuple(paths), unknown, counts)


def _chunk(ids: np.ndarray, starts: np.ndarray, t0: int, T: int, limit: np.ndarray):
    """Inputs and targets of positions starts + t0 … starts + t0 + T − 1 of each stream, as (T, B) int64,
    and the (T, B) mask of positions below each stream's `limit` (its end)."""
    pos = starts[None, :] + np.arange(t0, t0 + T)[:, None]  # (T, B)
    valid = pos < limit[None, :]
    pos = np.where(valid, pos, 0)
    return ids[pos].astype(np.int64), ids[pos + 1].astype(np.int64), valid


SCORE_BLOCK_BYTES = 16 << 20  # logits scored at a time by evaluate: 16 MiB, whatever the vocabulary size


def _nll_sum(head, u: np.ndarray, y: np.ndarray) -> float:
    """Σ −log softmax(head(u_p))[y_p] over positions p: u (P, H) head inputs, y (P,) target ids.

    The (P, V) logits are made a block of rows at a time, so that at most :data:`SCORE_BLOCK_BYTES`
    of them (and no other array of their size) exist at once — a vocabulary of 70,000 characters would
    otherwise need gigabytes for one chunk. Computed in the model's dtype (float32 for a trained model);
    only the per-block sums are accumulated in float64.
    """
    W, b = head.params["W"], head.params.get("b")
    rows = max(1, SCORE_BLOCK_BYTES // (W.shape[0] * W.dtype.itemsize))
    total = 0.0
    for s in range(0, len(y), rows):
        z = u[s : s + rows] @ W.T  # (rows, V)
        if b is not None:
            z += b
        picked = z[np.arange(len(z)), y[s : s + rows]]
        top = z.max(axis=1)
        z -= top[:, None]
        np.exp(z, out=z)  # in place: the block is the only (rows, V) array
        lse = np.log(z.sum(axis=1)) + top
        total += float((lse - picked).sum(dtype=np.float64))
    return total


# The constants of the documented peak-memory bound (module docstring), from measured peaks with margin:
# per parameter (an LSTM of 12.9 M parameters used 52 bytes each, mostly while saving a checkpoint),
# per position and recurrent unit in a training step (61 measured) and in validation (36 measured).
_BYTES_PER_PARAM, _TRAIN_BYTES_PER_UNIT, _EVAL_BYTES_PER_UNIT, _BYTES_PER_CHAR_TYPE = 64, 64, 48, 1024
_EVAL_BATCH, _EVAL_SEQ_LEN = 64, 200  # evaluate's defaults, what validation uses


def memory_bound(cfg: CharLMConfig, n_chars: int, vocab_size: int) -> int:
    """Upper bound in bytes on the memory :func:`fit` uses on `n_chars` characters of `vocab_size` distinct
    ones, beyond the interpreter's own (the formula of the module docstring; the model is not built)."""
    from unrolled.apps.charlm.text import CHUNK_BYTES
    from unrolled.checkpoint import model_param_shapes

    n_chars, V = positive_int("n_chars", n_chars), positive_int("vocab_size", vocab_size)
    P = sum(math.prod(shape) for shape in model_param_shapes(cfg.model_config(V)).values())
    id_bytes = 1 if V <= 1 << 8 else 2 if V <= 1 << 16 else 4
    units = cfg.hidden * cfg.layers + cfg.embed  # per position: each layer's H units and the embedding
    batch = cfg.batch * cfg.seq_len
    return (
        id_bytes * n_chars
        + _BYTES_PER_PARAM * P
        + batch * (12 * V + _TRAIN_BYTES_PER_UNIT * units)
        + SCORE_BLOCK_BYTES
        + _EVAL_BATCH * _EVAL_SEQ_LEN * _EVAL_BYTES_PER_UNIT * units
        + _BYTES_PER_CHAR_TYPE * V
        + 32 * CHUNK_BYTES
    )


def scored_predictions(ids: np.ndarray, ignore_id: int | None = None) -> int:
    """How many next-character predictions :func:`evaluate` scores on `ids` (N,): N − 1, less those whose
    target is `ignore_id`."""
    n = max(len(ids) - 1, 0)
    return n if ignore_id is None else n - int(np.count_nonzero(ids[1:] == ignore_id))


def evaluate(
    model: SequenceModel,
    ids: np.ndarray,
    batch: int = 64,
    seq_len: int = 200,
    ignore_id: int | None = None,
    progress: bool = False,
) -> float:
    """Mean negative log-likelihood in nats per predicted character of the text `ids` (N,), N >= 2.

    ``progress``: a bar on standard error over the chunks, for texts that take more than a moment.

    Every one of the N − 1 next-character predictions counts exactly once, except those whose target is
    `ignore_id` (e.g. <unk>: a character the model cannot name is read, never scored); the mean is over
    the :func:`scored_predictions`. The text is read as up to
    `batch` contiguous streams, each from a zero state and carried chunk to chunk, so only the first
    characters of each stream are predicted without context (negligible when N ≫ batch).

    Memory does not grow with N, and with the vocabulary size V only through the head's logits, which
    are scored :data:`SCORE_BLOCK_BYTES` at a time (see :func:`_nll_sum`): besides the model, one chunk
    of `seq_len` × `batch` positions through the recurrent stack (O(seq_len·batch·H·layers)) and one
    block of logits, in the model's dtype.
    """
    c = model.config
    if c.input != "tokens" or c.output != "sequence":
        raise ValueError(
            "model: expected a language model (input='tokens', output='sequence'), "
            f"got input={c.input!r}, output={c.output!r}"
        )
    n = len(ids) - 1  # predictions
    if n < 1:
        raise TextError("evaluation text: at least 2 characters are needed (one to read, one to predict)")
    scored = scored_predictions(ids, ignore_id)
    if scored < 1:
        raise TextError("evaluation text: no prediction to score (every target is <unk>)")
    B = min(batch, n)
    L = -(-n // B)  # stream length, the last stream shorter
    starts = np.arange(B, dtype=np.int64) * L
    limit = np.minimum(starts + L, n)
    was_training = model.training
    model.eval()
    total, state = 0.0, None
    chunks = range(0, L, seq_len)
    if progress and len(chunks) > 1:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="scoring", unit="chunk", leave=False, mininterval=1.0)
    try:
        for t0 in chunks:
            x, y, valid = _chunk(ids, starts, t0, min(seq_len, L - t0), limit)
            # model.forward in eval mode (no dropout) is head(rnn(embed(x))); the head is applied here
            # instead, in blocks, so that the (T, B, V) logits never exist at once.
            u, state = model.rnn.forward(model.embed.forward(x), state)  # (T, B, H)
            if ignore_id is not None:
                valid &= y != ignore_id
            total += _nll_sum(model.head, u[valid], y[valid])
    finally:
        model.train(was_training)
    return total / scored


def bits(nats: float) -> float:
    """Nats per character → bits per character."""
    return nats / LN2


def plural(n: float, noun: str) -> str:
    """``1 minute``, ``2 minutes``, ``0.5 minutes``, ``1,200 steps``."""
    shown = f"{n:,}" if isinstance(n, int) else f"{n:g}"
    return f"{shown} {noun}{'' if n == 1 else 's'}"


# --------------------------------------------------------------------------- training
@dataclass
class RunSummary:
    """How a training run ended (also written to ``DIR/summary.json``)."""

    step: int  # optimizer steps of the whole run
    reason: str  # why it stopped: max_steps, max_time, interrupted
    val_nats: float | None  # at the last step, None when interrupted
    val_chars: int  # characters of the validation part read by each validation
    train_chars: int
    parameters: int
    train_seconds: float  # the whole run's training wall time (resumed sessions included)
    directory: str
    best_val_nats: float | None = None  # of the weights in best/ (what sample and eval read)

    @property
    def val_bits(self) -> float | None:
        return None if self.val_nats is None else bits(self.val_nats)

    @property
    def best_val_bits(self) -> float | None:
        return None if self.best_val_nats is None else bits(self.best_val_nats)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "val_bits": self.val_bits, "best_val_bits": self.best_val_bits}


def build(cfg: CharLMConfig, vocab_size: int) -> SequenceModel:
    """A freshly initialised model of ``cfg`` over a vocabulary of `vocab_size` characters."""
    return SequenceModel(cfg.model_config(vocab_size))


def fit(
    cfg: CharLMConfig,
    texts,
    out,
    *,
    vocab: Vocabulary | None = None,
    resume: bool = False,
    progress: bool = True,
    extra_meta: dict[str, Any] | None = None,
    log=print,
    unknown: str = "error",
    comm=None,
) -> RunSummary:
    """Train (or, with `resume`, continue) a character-level model on `texts`; checkpoints go to `out`.

    The model is written by :class:`~unrolled.train.Trainer` to ``out/last`` (every ``val_every`` steps,
    at the end and on Ctrl-C) and ``out/best`` (best periodic validation); metrics to
    ``out/metrics.jsonl``, the summary to ``out/summary.json``. `vocab` is the vocabulary of a resumed run
    (the texts must fit it, or `unknown` says what becomes of the characters that do not: see
    :func:`load_corpus`).

    out : a :class:`~unrolled.rundir.RunDir` (the command line's, already open and locked), or a folder,
        which is then opened here with :func:`~unrolled.rundir.open_run` (kind "charlm", `resume`, no
        overwrite) for the length of the run: a folder holding another run or a user's files is refused
        with :class:`~unrolled.rundir.RunDirError`, as is a second process writing the same folder.

    Raises :class:`~unrolled.train.DivergenceError` when the run diverges: a non-finite weight, or the
    validation loss above ln V + 1 nats (worse than a uniform guess over the V characters) at 3
    validations in a row; ``out/last`` then holds the last good checkpoint.

    comm : data-parallel over the ranks of a :class:`~unrolled.distributed.Communicator` (``--batch``
        streams split among them, :func:`~unrolled.distributed.shard`): every rank calls ``fit``; rank 0
        alone opens `out` (pass the other ranks its path, once rank 0 holds it), logs, validates and writes;
        each rank keeps only its streams' ids. The other ranks return the summary without a validation.
    """
    from unrolled.distributed import Local
    from unrolled.rundir import RunDir, open_run

    comm = comm or Local()
    with contextlib.ExitStack() as stack:
        if not isinstance(out, RunDir) and comm.is_root:
            out = stack.enter_context(open_run(out, APP, resume=resume, overwrite=False, what="out"))
        if not comm.is_root:
            progress, log = False, _silent
        return _fit(cfg, texts, out, vocab, resume, progress, extra_meta, log, unknown, comm)


def _silent(*args, **kwargs) -> None:
    """The log of ranks other than 0: rank 0 speaks for the run."""


def _fit(cfg, texts, run, vocab, resume, progress, extra_meta, log, unknown, comm) -> RunSummary:
    from unrolled.distributed import shard
    from unrolled.optim import Adam, CosineLR
    from unrolled.tbptt import TokenStreams, lm_loss
    from unrolled.train import LossBound, Trainer

    out = Path(run) if not comm.is_root else run.root
    set_blas_threads(cfg.threads)
    if cfg.batch < comm.size:
        raise ValueError(
            f"--batch {cfg.batch}: a data-parallel run over {comm.size} ranks needs at least one stream per "
            f"rank (--batch {comm.size} or more)"
        )
    corpus = load_corpus(texts, vocab, unknown)
    train_ids, val_ids = split_validation(corpus.ids, cfg.val_fraction)
    n_train, n_val = len(train_ids), len(val_ids)
    if n_train - 1 < cfg.batch:
        raise TextError(
            f"training text: {n_train} characters are too few for --batch {cfg.batch} streams; "
            "use a longer text or a smaller --batch"
        )
    # One process: all the streams (views of the ids). Several ranks: each copies only its own streams'
    # ids, rank 0 the validation part too; the whole text is then released.
    mine = None if comm.size == 1 else shard(cfg.batch, comm.rank, comm.size)
    streams = TokenStreams(train_ids, cfg.batch, cfg.seq_len, streams=mine)
    val_part = val_ids[: cfg.val_chars + 1]
    if comm.size > 1:
        val_part = val_part.copy() if comm.is_root else val_part[:2].copy()
        del train_ids, val_ids
        corpus = dataclasses.replace(corpus, ids=np.empty(0, corpus.ids.dtype))
    model = build(cfg, corpus.vocab.size)
    if corpus.vocab.unk_id is not None:
        # <unk> is never read in training unless a resumed run maps new characters to it: its embedding
        # starts at zero (no information) rather than at a random vector, and gets gradient only then.
        model.params["embed.W"][corpus.vocab.unk_id] = 0.0
    n_params = sum(v.size for v in model.params.values())

    last_val: dict[int, float] = {}  # step -> nats of the periodic validation at that step

    def validate(m: SequenceModel) -> float:
        nats = last_val[trainer.step] = evaluate(m, val_part)
        _write(f"step {trainer.step}: validation {bits(nats):.3f} bits/char ({nats:.4f} nats)", progress, log)
        return nats

    meta = {
        "app": APP,
        "vocab": corpus.vocab.to_json(),
        "charlm": cfg.to_dict(),
        "texts": [str(Path(p).resolve()) for p in corpus.paths],
        **(extra_meta or {}),
    }
    trainer = Trainer(
        model, Adam(model.params, lr=cfg.lr), streams, lm_loss, val_fn=validate,
        max_steps=cfg.steps, max_time=None if cfg.time is None else 60.0 * cfg.time,
        schedule=CosineLR(cfg.lr, cfg.steps) if cfg.schedule == "cosine" else None,
        clip_norm=cfg.clip or None, eval_every=cfg.val_every, checkpoint_dir=out,
        checkpoint_every=cfg.val_every, progress=progress, comm=comm,
        metrics_path=run.path("metrics.jsonl") if comm.is_root else None,
        progress_loss=("bits", 1.0 / LN2), carry_state=True, meta=meta,
        # diverged: worse than a uniform guess over the V characters, at 3 validations in a row
        max_loss=LossBound(math.log(corpus.vocab.size) + 1.0, "val_loss", times=3),
    )  # fmt: skip
    log(
        f"{'resuming' if resume else 'training'} a {cfg.layers}-layer {cfg.cell.upper()} of {cfg.hidden} "
        f"units ({n_params:,} parameters, vocabulary of {corpus.vocab.size} characters) on "
        f"{n_train:,} characters, validating on {len(val_part):,}"
        + (f" of the {n_val:,} held out" if len(val_part) < n_val else "")
        + "; "
        + (plural(cfg.time, "minute") if cfg.time is not None else "")
        + (" or " if cfg.time is not None and cfg.steps is not None else "")
        + (plural(cfg.steps, "step") if cfg.steps is not None else "")
        + f"; kernels: {_path(model)}"
        + (f"; data-parallel over {comm.size} ranks, {cfg.batch} streams split among them" if mine else "")
    )
    if corpus.counts:
        what = "left out" if corpus.unknown == "skip" else "read as <unk>"
        log(f"--unknown {corpus.unknown}: {plural(corpus.n_unknown, 'character')} the model has no id for, "
            f"{what}: {describe_chars(corpus.counts)}")  # fmt: skip
    result = trainer.fit(resume=resume)
    walls = [r["wall_time"] for r in trainer.history if "wall_time" in r]
    seconds = walls[-1] if walls else trainer.wall_offset
    if result.reason == "interrupted" or not comm.is_root:
        val = None
    elif result.step in last_val:
        val = last_val[result.step]  # the Trainer validated at the last step
    else:
        val = evaluate(model, val_part)
    summary = RunSummary(
        result.step, result.reason, val, len(val_part), n_train, n_params, round(seconds, 3), str(out),
        best_val_nats=result.best_val_loss,
    )  # fmt: skip
    if not comm.is_root:
        return summary
    finite = {
        k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in summary.to_dict().items()
    }
    run.write_json("summary.json", finite)  # strict JSON: a non-finite number is null
    return summary


def _write(line: str, progress: bool, log) -> None:
    """A line that does not break the progress bar."""
    if progress:
        from tqdm.auto import tqdm

        tqdm.write(line)
    else:
        log(line)


# --------------------------------------------------------------------------- saved models
def model_path(directory, checkpoint: str | None = None) -> Path:
    """The checkpoint to read for `directory` by the rule of :func:`unrolled.resolve.resolve_model`: a run
    directory's ``best/`` when it has one, else its ``last/`` (`checkpoint` chooses); a checkpoint
    directory itself."""
    from unrolled.resolve import resolve_model

    return resolve_model(directory, checkpoint).path


def load(directory, checkpoint: str | None = None) -> tuple[SequenceModel, Vocabulary, dict[str, Any]]:
    """The model (eval mode), vocabulary and checkpoint meta of a directory written by ``train charlm``
    (which checkpoint of a run directory: :func:`model_path`).

    Raises :class:`~unrolled.checkpoint.CheckpointError` (a ValueError) for a directory that is not one.
    """
    from unrolled.checkpoint import CheckpointError, load_model

    model, meta = load_model(model_path(directory, checkpoint))
    if meta.get("app") != APP or "vocab" not in meta:
        what = f"a {meta['app']} model" if isinstance(meta.get("app"), str) else "no vocabulary"
        raise CheckpointError(f"{directory}: not a character-level language model (it holds {what})")
    # The model is no larger than the checkpoint's verified arrays (load_model compares the shapes its
    # config implies with them before building it). The vocabulary string in meta is not bounded by them:
    # its size is compared with the embedding's and the head's rows (and MAX_VOCAB) before it is decoded.
    if model.config.input != "tokens" or model.config.output != "sequence":
        raise CheckpointError(
            f"{directory}: not a character-level language model (its model reads {model.config.input} "
            f"and outputs {model.config.output})"
        )
    chars = meta["vocab"]
    rows = (model.params["embed.W"].shape[0], model.params["head.W"].shape[0])
    if not isinstance(chars, str):
        raise CheckpointError(
            f"{directory}: invalid vocabulary (expected a string, got {type(chars).__name__})"
        )
    if len(chars) > MAX_VOCAB:
        raise CheckpointError(
            f"{directory}: the vocabulary has {len(chars):,} characters, more than the {MAX_VOCAB:,} "
            "Unicode code points"
        )
    if rows != (len(chars), len(chars)):
        raise CheckpointError(
            f"{directory}: the vocabulary has {len(chars):,} characters, the model's embedding "
            f"{rows[0]:,} rows and its output layer {rows[1]:,}"
        )
    try:
        vocab = Vocabulary.from_json(chars)
    except TextError as e:
        raise CheckpointError(f"{directory}: invalid vocabulary ({e})") from None
    return model, vocab, meta


# --------------------------------------------------------------------------- sampling
@dataclass
class SampleConfig:
    """The options of ``unrolled sample`` (its command line is built from these fields)."""

    prime: str | None = option(
        None,
        "text to start from, printed first (default: a newline, or the vocabulary's first character)",
        type=str,
        metavar="TEXT",
    )
    length: int = option(500, "characters to generate after the prime", metavar="N")
    temperature: float = option(
        0.8,
        "divide the logits by T before the softmax: lower is more conservative, 0 = greedy",
        metavar="T",
    )
    top_k: int | None = option(None, "draw only among the K most likely characters", type=int, metavar="K")
    seed: int | None = option(None, "seed of the draws, for a reproducible sample", type=int, metavar="N")
    repetition_penalty: float = option(
        1.0,
        "discourage the characters of the last --repetition-window ones (CTRL's penalty: a positive logit "
        "is divided by P, a negative one multiplied); 1 = off. Greedy decoding (--temperature 0) of a "
        "character model loops (often on spaces): try 1.2-1.5, or a temperature",
        metavar="P",
    )
    repetition_window: int = option(
        32,
        "how many of the latest characters (the prime's included) --repetition-penalty looks at",
        metavar="N",
    )
    unknown: str = option(
        "error",
        "a --prime character the model has no id for: error, skip it, or map it to <unk>",
        choices=UNKNOWN_POLICIES,
    )


def default_prime(vocab: Vocabulary) -> str:
    """A newline when the model knows it (the start of a line), else the vocabulary's first character."""
    return "\n" if "\n" in vocab else vocab.text_chars[0]


def sample_text(model: SequenceModel, vocab: Vocabulary, cfg: SampleConfig):
    """Yield the generated characters one at a time (the prime is not repeated; <unk> is never drawn).

    Raises :class:`TextError` for a prime character outside the vocabulary (with ``cfg.unknown="error"``),
    or a prime left empty by ``"skip"``.
    """
    from unrolled.apps.charlm.sampling import check_penalty, check_sampling, generate

    if cfg.length < 0:
        raise ValueError(f"--length: expected a number >= 0, got {cfg.length}")
    check_sampling(cfg.temperature, cfg.top_k)
    check_penalty(cfg.repetition_penalty, cfg.repetition_window)
    check_unknown_policy(cfg.unknown, vocab)
    prime = cfg.prime or default_prime(vocab)
    ids = vocab.encode(prime, where="--prime", unknown=cfg.unknown)
    if len(ids) == 0:
        raise TextError("--prime: every character is unknown to the model; nothing left to start from")
    rng = np.random.default_rng(cfg.seed)
    banned = () if vocab.unk_id is None else (vocab.unk_id,)
    tokens = generate(
        model, ids, cfg.length, cfg.temperature, cfg.top_k, rng,
        repetition_penalty=cfg.repetition_penalty, repetition_window=cfg.repetition_window, banned=banned,
    )  # fmt: skip
    for token in tokens:
        yield vocab.chars[token]


FIXED_ON_RESUME = ("cell", "layers", "hidden", "embed", "batch", "seq_len", "seed", "val_fraction")
FIXED_ON_RESUME += ("layer_norm", "peephole", "proj_size")  # the architecture; zoneout may change


def _path(model: SequenceModel) -> str:
    """The path the recurrent stack runs, in words: peepholes, a projection and zoneout run the reference."""
    from unrolled import kernels  # as fit does: imported when a run starts

    rnn = model.rnn
    if kernels.fast_enabled() and (kernels.pick(rnn.cell, rnn.dtype) is rnn.cell or rnn.zoneout):
        return "reference (NumPy: the peephole / projection / zoneout cells have no compiled path)"
    return kernels.describe()


def resume_config(saved: CharLMConfig, given: dict[str, Any], directory) -> CharLMConfig:
    """The config of a resumed run: the saved one with the options the user gave (not the fixed ones)."""
    for k in FIXED_ON_RESUME:
        if k in given and given[k] != getattr(saved, k):
            flag = "--" + k.replace("_", "-")
            raise ValueError(
                f"{flag} {given[k]}: the run in {directory} was trained with {flag} {getattr(saved, k)}, "
                "which --resume cannot change; start a new run with another --out"
            )
    return dataclasses.replace(saved, **given)


def report(summary: RunSummary, log=print) -> None:
    """The closing lines of a training run."""
    d = Path(summary.directory)
    if summary.reason == "interrupted":
        log(f"interrupted at step {summary.step}; checkpoint in {d / 'last'}; continue with --resume")
        return
    best = summary.best_val_bits
    log(
        f"step {summary.step} ({summary.reason.replace('_', ' ')}, {summary.train_seconds / 60:.1f} min): "
        f"validation {summary.val_bits:.3f} bits/char ({summary.val_nats:.4f} nats) over "
        f"{summary.val_chars:,} characters"
        + (
            f", best {best:.3f} (in best/: what sample and eval read)"
            if best is not None and f"{best:.3f}" != f"{summary.val_bits:.3f}"
            else ""
        )
        + f"; {summary.parameters:,} parameters"
    )
    what = {"last": "the final model", "best": "the best validation", "metrics.jsonl": "per step"}
    saved = ", ".join(f"{name}: {w}" for name, w in what.items() if (d / name).exists())
    log(f"saved to {d} ({saved})")
