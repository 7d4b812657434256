"""The Trainer: the loop every application shares, with exact checkpoints and resume.

One training step::

    lr      = schedule(step) · lr_scale                  (lr_scale halves on each skipped step)
    loss, n = loss_fn(model, batch)                       forward + backward: fills model.grads
    ‖g‖     = clip_grad_norm(model.grads, clip_norm)      (or just measured)
    if loss or any gradient is not finite: the update is not applied (policy "stop" or "skip")
    optimizer.step(model.grads)
    if any parameter is not finite now: policy "stop" raises; "skip" rolls back to the last checkpoint

The application supplies ``loss_fn`` — so a char-LM with truncated BPTT, a forecaster, a classifier
and a seq2seq model all reuse the same loop. With ``carry_state=True`` the call is
``loss_fn(model, batch, state) -> (loss, n_tokens, state)`` and the returned state is passed to the next
batch of the same epoch (truncated BPTT: see :mod:`unrolled.tbptt`); it restarts from None each epoch.

Exact resume. A checkpoint holds the weights, the optimizer's slots and step count, every Generator
state of the model (dropout masks), the carried state, the position in the data (epoch, batch index),
the schedule's step, the lr scale and the early-stopping counters. The batches of an epoch must be a
pure function of the epoch number (``batches(epoch)``, e.g. :class:`~unrolled.data.batching.SequenceBatches`),
and any randomness inside ``loss_fn`` must be drawn from the model's generators. Then an interrupted
run resumed from its last checkpoint ends with bit-identical weights to the run never interrupted.

Failure is an exception, never a quiet return: a diverged run raises :class:`DivergenceError` (a
RuntimeError; the command line prints one ``unrolled: error:`` line and exits non-zero) — either
:class:`NonFiniteError` (a NaN/inf loss, gradient or, after an update, parameter) or a crossed loss bound
(``max_loss``, e.g. :class:`LossBound`). ``<checkpoint_dir>/last`` then still holds the last good
checkpoint: a diverged model is never written (checkpoints refuse NaN/inf arrays).

Signals: during :meth:`Trainer.fit` the first SIGINT (Ctrl-C) or SIGTERM (what ``kill``, schedulers and
``docker stop`` send) stops the run after the current step with a checkpoint (``reason="interrupted"``).
A second signal aborts at once through the handler that was there before ``fit`` (Python's: a
KeyboardInterrupt for SIGINT, death by signal for SIGTERM); the atomic checkpoints keep the last good one.
A signal ignored when ``fit`` starts (a background job's SIGINT) stays ignored. The previous handlers
are restored when ``fit`` returns or raises.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from unrolled._checks import positive_int
from unrolled._resume import check_optimizer_state, check_rng_state, check_trainer_state, need
from unrolled.checkpoint import (
    CheckpointError,
    first_nonfinite,
    load_checkpoint,
    restore_arrays,
    save_checkpoint,
    write_atomic,
)
from unrolled.clip import clip_grad_norm, clip_grad_value, global_norm
from unrolled.distributed import Communicator, Local, jump_rng_state, shard
from unrolled.optim import ConstantLR, schedule_to_dict

__all__ = ["DivergenceError", "LossBound", "NonFiniteError", "Trainer", "TrainResult"]

# Fields of ModelConfig that change the shapes or the function (refused on resume when they differ).
_ARCH_FIELDS = (
    "input", "vocab_size", "input_size", "embed_dim", "cell", "hidden_size", "num_layers", "bidirectional",
    "nonlinearity", "reset_after", "output_size", "output", "dtype", "layer_norm", "peephole", "proj_size",
)  # fmt: skip
# What a checkpoint from before a field existed means by its absence (the cell variants of issue 17).
_ARCH_ABSENT = {"layer_norm": False, "peephole": False, "proj_size": 0}


class DivergenceError(RuntimeError):
    """The run diverged and stopped: its message is one line saying at which step, why, and which is the
    last good checkpoint (``<checkpoint_dir>/last``, never overwritten by the diverged state)."""


class NonFiniteError(DivergenceError):
    """A step produced a non-finite loss or gradient, or an update a non-finite parameter (policy "stop",
    or "skip" with no checkpoint to roll back to)."""


class LossBound:
    """A loss bound for ``Trainer(max_loss=...)``: the run has diverged when the loss named by `key` is
    above `limit` in `times` consecutive metrics records that carry it (a NaN counts as above).

    Parameters
    ----------
    limit : the bound. For a language model over V symbols, ``math.log(V) + margin`` is a loss worse than
        guessing uniformly.
    key : ``"val_loss"`` (validation steps) or ``"loss"`` (every training step).
    times : how many in a row (the count starts again on resume).

    Example: ``LossBound(math.log(V) + 0.5, "val_loss", times=3)``.
    """

    def __init__(self, limit: float, key: str = "val_loss", times: int = 1) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not math.isfinite(limit):
            raise ValueError(f"limit: expected a finite number, got {limit!r}")
        if key not in ("val_loss", "loss"):
            raise ValueError(f"key: expected 'val_loss' or 'loss', got {key!r}")
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError(f"times: expected a positive integer, got {times!r}")
        self.limit, self.key, self.times = float(limit), key, times
        self._run = 0  # consecutive records above the limit

    def __call__(self, record: dict[str, Any]) -> str | None:
        """None while within the bound, else the one-line reason to stop."""
        v = record.get(self.key)
        if v is None:
            return None
        self._run = self._run + 1 if not v <= self.limit else 0
        if self._run < self.times:
            return None
        in_a_row = f" ({self.times} in a row)" if self.times > 1 else ""
        return f"{self.key} {v:.6g} is above the bound {self.limit:.6g}{in_a_row}"

    def __repr__(self) -> str:
        return f"LossBound({self.limit!r}, {self.key!r}, times={self.times})"


@dataclass
class TrainResult:
    """How :meth:`Trainer.fit` ended."""

    step: int  # updates counted so far (skipped steps included)
    epoch: int  # completed epochs
    reason: str  # "max_steps" | "max_time" | "epochs" | "early_stopping" | "interrupted"
    loss: float | None  # the last training loss
    best_val_loss: float | None  # the validation of the weights in best/ (see Trainer, checkpoint_dir)
    checkpoint: Path | None  # the last checkpoint written


class Trainer:
    """Steps/epochs, validation, early stopping, JSONL metrics, progress bar, Ctrl-C, checkpoints, resume.

    Parameters
    ----------
    model : a SequenceModel, or anything with ``params``, ``grads``, ``train()``, ``eval()`` (and, for exact
        resume with dropout, ``rng_state()`` / ``set_rng_state()``; ``config.to_dict()`` to check the
        architecture on resume).
    optimizer : an :mod:`unrolled.optim` optimizer over ``model.params``.
    batches : the batches of one epoch (a sequence, reused every epoch) or a callable ``epoch -> batches``.
        A sequence (``__len__`` + ``__getitem__``) lets resume jump to the batch directly.
    loss_fn : ``loss_fn(model, batch) -> (loss, n_tokens)`` doing forward and backward (fills model.grads);
        with ``carry_state``: ``loss_fn(model, batch, state) -> (loss, n_tokens, state)``.
    val_fn : ``val_fn(model) -> float`` (lower is better), run in eval mode every ``eval_every`` steps and
        at the end.
    schedule : ``lr(step)`` (step = updates so far), e.g. :class:`~unrolled.optim.CosineLR`; default the
        optimizer's lr held constant.
    max_steps, epochs : stop after this many steps / epochs (at least one of them, or max_time).
    max_time : stop after the step during which the run's training wall time (all resumed sessions
        together, as in the checkpoints) reaches this many seconds.
    clip_norm : clip the global gradient norm to this (None: measured only). clip_value: clamp entries.
    eval_every : validate every N steps.  patience : stop after this many validations without an
        improvement of more than ``min_delta`` (None: never).
    checkpoint_dir : write ``<dir>/last`` every ``checkpoint_every`` steps, at the end and on Ctrl-C, and
        ``<dir>/best`` on each validation improvement, and at the end where the validation there (a run that
        stops between two) is the lowest yet (it changes no early-stopping counter).
    metrics_path : JSONL, one line per step: step, epoch, loss, grad_norm, lr, tokens, tokens_per_s,
        wall_time, val_loss on validation steps, and allreduce_s (seconds in the step's Allreduce) under
        several ranks.
    progress : show a tqdm bar (loss, tokens/s, ETA) on stderr.
    progress_loss : (name, factor) of the loss and best validation shown on the bar, e.g. ``("bits",
        1 / ln 2)`` for a language model whose loss is in nats; the metrics file keeps the loss as it is.
    on_nonfinite : "stop" (raise :class:`NonFiniteError`, keep the last good checkpoint) or "skip"
        (drop the step, multiply the lr by ``lr_backoff``, go on).
    meta : extra JSON-able entries saved in every checkpoint (e.g. the vocabulary).
    max_loss : the divergence bound: a number (a training step's loss above it) or a callable
        ``record -> str | None`` called with every metrics record (step, loss, val_loss on validation
        steps), returning the one-line reason to stop (e.g. :class:`LossBound`). Crossing it raises
        :class:`DivergenceError` and writes no checkpoint (None: no bound).
    comm : data-parallel training (:mod:`unrolled.distributed`, e.g. ``distributed.world()``): every rank
        runs this Trainer over its own share of each global batch (`batches` are the rank's; a carried
        state's batch axis 1 holds the rows ``distributed.shard(B, rank, size)`` of the global batch).
        Per step one Allreduce makes the gradient of the global mean loss (each rank's weighted by its
        ``n_tokens``), so the run equals one process over the global batch up to float32 summation order.
        Rank 0 alone writes metrics, checkpoints and the progress bar, and validates (its value is
        broadcast); a checkpoint holds the global carried state and every rank's generator states, and
        resumes on the same number of ranks exactly (on another number, or in one process, with the
        generators of rank 0 jumped per rank). ``fit``, ``save`` and ``load`` are then collective: every
        rank calls them together. None: one process.
    """

    def __init__(
        self,
        model,
        optimizer,
        batches: Sequence | Callable[[int], Iterable],
        loss_fn: Callable,
        *,
        val_fn: Callable[[Any], float] | None = None,
        schedule: Callable[[int], float] | None = None,
        max_steps: int | None = None,
        epochs: int | None = None,
        max_time: float | None = None,
        clip_norm: float | None = None,
        clip_value: float | None = None,
        eval_every: int | None = None,
        patience: int | None = None,
        min_delta: float = 0.0,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
        metrics_path: str | os.PathLike | None = None,
        progress: bool = True,
        progress_loss: tuple[str, float] = ("loss", 1.0),
        on_nonfinite: str = "stop",
        lr_backoff: float = 0.5,
        carry_state: bool = False,
        meta: dict[str, Any] | None = None,
        max_loss: float | Callable[[dict[str, Any]], str | None] | None = None,
        comm: Communicator | None = None,
    ) -> None:
        if max_steps is None and epochs is None and max_time is None:
            raise ValueError("max_steps / epochs / max_time: expected at least one of them, got none")
        if max_time is not None and not (isinstance(max_time, int | float) and 0 < max_time < math.inf):
            raise ValueError(f"max_time: expected a positive number of seconds, got {max_time!r}")
        for name, v in (("max_steps", max_steps), ("epochs", epochs), ("eval_every", eval_every),
                        ("checkpoint_every", checkpoint_every), ("patience", patience)):  # fmt: skip
            positive_int(name, v, allow_none=True)
        if on_nonfinite not in ("stop", "skip"):
            raise ValueError(f"on_nonfinite: expected 'stop' or 'skip', got {on_nonfinite!r}")
        if not 0 < lr_backoff <= 1:
            raise ValueError(f"lr_backoff: expected a factor in (0, 1], got {lr_backoff!r}")
        if checkpoint_every is not None and checkpoint_dir is None:
            raise ValueError("checkpoint_every: needs checkpoint_dir (where to write the checkpoints)")
        if patience is not None and (val_fn is None or eval_every is None):
            raise ValueError("patience: early stopping needs val_fn and eval_every")
        if optimizer.params is not model.params and set(optimizer.params) != set(model.params):
            raise ValueError("optimizer: expected an optimizer over model.params")
        self.model, self.optimizer, self.batches, self.loss_fn = model, optimizer, batches, loss_fn
        self.val_fn, self.schedule = val_fn, schedule or ConstantLR(optimizer.lr)
        self.max_steps, self.epochs, self.max_time = max_steps, epochs, max_time
        self.clip_norm, self.clip_value = clip_norm, clip_value
        self.eval_every, self.patience, self.min_delta = eval_every, patience, float(min_delta)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.checkpoint_every = checkpoint_every
        self.metrics_path = Path(metrics_path) if metrics_path is not None else None
        self.progress, self.on_nonfinite, self.lr_backoff = progress, on_nonfinite, float(lr_backoff)
        self.progress_loss = (str(progress_loss[0]), float(progress_loss[1]))
        self.carry_state, self.meta = carry_state, dict(meta or {})
        self.max_loss = _loss_bound(max_loss)
        self.comm = comm if comm is not None else Local()
        if not self.comm.is_root:  # rank 0 alone writes and shows the run
            self.metrics_path, self.progress = None, False
        self._agreed: str | None = None  # a stop every rank agreed on in the last Allreduce
        self._t_start = 0.0
        # The run's position and counters: everything a checkpoint needs besides model and optimizer.
        self.step = 0  # updates so far (a skipped step counts)
        self.epoch = 0  # completed epochs
        self.pos = 0  # batches of the current epoch already consumed
        self.state = None  # carried recurrent state (truncated BPTT)
        self.lr_scale = 1.0
        # The best periodic validation (lower by min_delta): with bad_evals, the counters of the course
        self.best_val: float | None = None
        self.bad_evals = 0
        # The validation loss of the weights in <checkpoint_dir>/best: the lowest periodic one, or the one at
        # the end of a session where that is lower (a run that stops between two validations)
        self.best_kept: float | None = None
        self.tokens = 0
        self.wall_offset = 0.0
        self.last_checkpoint_step: int | None = None
        self.history: list[dict[str, Any]] = []
        self._bar_steps: int | None = None  # the step total a time-limited bar also follows
        self._stop_requested = False
        self._metrics = None

    # ----------------------------------------------------------------- checkpoints
    @property
    def last_path(self) -> Path | None:
        return self.checkpoint_dir / "last" if self.checkpoint_dir else None

    def _trainer_state(self, wall: float) -> dict[str, Any]:
        return {
            "step": self.step, "epoch": self.epoch, "pos": self.pos, "lr_scale": self.lr_scale,
            "best_val": self.best_val, "bad_evals": self.bad_evals, "tokens": self.tokens, "wall_time": wall,
            "state_kind": None if self.state is None else type(self.state).__name__,
            "best_kept": self.best_kept,
        }  # fmt: skip

    def save(self, path: str | os.PathLike | None = None, wall: float | None = None) -> Path:
        """Write a checkpoint of the whole run (default ``<checkpoint_dir>/last``)."""
        path = Path(path) if path is not None else self.last_path
        if path is None:
            raise ValueError("path: no checkpoint_dir given to the Trainer and no path given to save")
        m = self.model
        distributed = self._gather_for_checkpoint()  # every rank: the collectives
        if not self.comm.is_root:
            if path == self.last_path:
                self.last_checkpoint_step = self.step
            return path
        arrays = {f"model/{k}": v for k, v in m.params.items()}
        osd = self.optimizer.state_dict()
        arrays.update({f"optim/{k}": v for k, v in osd.pop("arrays").items()})
        state = self.state if distributed is None else distributed.pop("state")
        if state is not None:
            for i, s in enumerate(state if isinstance(state, tuple) else (state,)):
                arrays[f"state/{i}"] = s
        meta = {
            **self.meta,
            "kind": "unrolled.train",
            "optimizer": osd,
            "rng": m.rng_state() if hasattr(m, "rng_state") else None,
            "trainer": self._trainer_state(self.wall_offset if wall is None else wall),
            "schedule": _schedule_dict(self.schedule),
        }
        if hasattr(m, "config"):
            meta["config"] = m.config.to_dict()
        if distributed is not None:
            meta["distributed"] = distributed
        save_checkpoint(path, arrays, meta)
        if path == self.last_path:
            self.last_checkpoint_step = self.step
        return path

    def load(self, path: str | os.PathLike | None = None) -> None:
        """Restore a run from a checkpoint written by :meth:`save`.

        Every field read is checked first (types, ranges, the optimizer's hyper-parameters and slots
        against this optimizer, the architecture against this model); a checkpoint that fails any check
        raises :class:`~unrolled.checkpoint.CheckpointError` and changes nothing.
        """
        path = Path(path) if path is not None else self.last_path
        arrays, meta = load_checkpoint(path)
        where = f"checkpoint {path}"
        if meta.get("kind") != "unrolled.train":
            raise CheckpointError(f"{where}: not a training checkpoint (no optimizer / trainer state)")
        if hasattr(self.model, "config") and "config" in meta:
            ours, theirs = self.model.config.to_dict(), meta["config"]
            need(isinstance(theirs, dict), f"{where}: config", "a dict", type(theirs).__name__)
            stored = {k: theirs.get(k, _ARCH_ABSENT.get(k)) for k in _ARCH_FIELDS}
            diff = [f"{k} {stored[k]!r} (this model: {ours[k]!r})" for k in _ARCH_FIELDS
                    if k in ours and stored[k] != ours[k]]  # fmt: skip
            if diff:
                raise CheckpointError(f"{where} was written for another architecture: {', '.join(diff)}")
        t = check_trainer_state(meta.get("trainer"), arrays, where)
        osd = check_optimizer_state(meta.get("optimizer"), arrays, self.optimizer, where)
        rng, m = meta.get("rng"), self.model
        old_rng = m.rng_state() if hasattr(m, "rng_state") and hasattr(m, "set_rng_state") else None
        check_rng_state(rng, old_rng, where)
        try:
            if old_rng is not None:
                try:
                    m.set_rng_state(rng)
                except (TypeError, ValueError, KeyError, OverflowError) as e:
                    raise CheckpointError(
                        f"{where}: rng: not a state of this model's generators ({e})"
                    ) from None
            restore_arrays(m.params, arrays, "model/", what=where)  # checks everything before copying
        except BaseException:
            if old_rng is not None:
                m.set_rng_state(old_rng)
            raise
        self.optimizer.load_state_dict(osd)  # checked above: cannot fail half-way
        self.step, self.epoch, self.pos = t["step"], t["epoch"], t["pos"]
        self.lr_scale, self.best_val, self.bad_evals = t["lr_scale"], t["best_val"], t["bad_evals"]
        self.best_kept = t["best_kept"]
        self.tokens, self.wall_offset = t["tokens"], t["wall_time"]
        states = [arrays[f"state/{i}"] for i in range(sum(k.startswith("state/") for k in arrays))]
        self.state = (
            None if t["state_kind"] is None else (tuple(states) if t["state_kind"] == "tuple" else states[0])
        )
        if self.comm.size > 1 or "distributed" in meta:
            self._take_share(meta, where)
        self.last_checkpoint_step = self.step

    # ----------------------------------------------------------------- data parallel
    def _gather_for_checkpoint(self) -> dict[str, Any] | None:
        """Under several ranks: the global carried state (rank 0) and every rank's generator states,
        gathered for rank 0's checkpoint (collectives: every rank calls this at the same step)."""
        comm, m = self.comm, self.model
        if comm.size == 1:
            return None
        state = None
        if self.state is not None:
            parts = self.state if isinstance(self.state, tuple) else (self.state,)
            rows = [comm.gather_rows(s, 1, "checkpoint (carried state)") for s in parts]
            state = tuple(rows) if isinstance(self.state, tuple) else rows[0]
        rng = m.rng_state() if hasattr(m, "rng_state") else None
        rngs = comm.gather_bytes(json.dumps(rng).encode(), "checkpoint (generator states)")
        if not comm.is_root:
            return None
        return {"size": comm.size, "rng": [json.loads(b) for b in rngs], "state": state}

    def _take_share(self, meta: dict[str, Any], where: str) -> None:
        """After :meth:`load`: this rank's rows of the global carried state and its generator states (the
        saved ones on as many ranks as wrote them; else rank 0's jumped ``rank`` times)."""
        comm, m = self.comm, self.model
        if self.state is not None and comm.size > 1:
            parts = self.state if isinstance(self.state, tuple) else (self.state,)
            lo, hi = shard(parts[0].shape[1], comm.rank, comm.size)
            mine = tuple(s[:, lo:hi].copy() for s in parts)
            self.state = mine if isinstance(self.state, tuple) else mine[0]
        if not (hasattr(m, "rng_state") and hasattr(m, "set_rng_state")):
            return
        saved = meta.get("distributed")
        rngs = saved.get("rng") if isinstance(saved, dict) else None
        if isinstance(rngs, list) and len(rngs) == comm.size:
            rng = rngs[comm.rank]
        else:
            rng = jump_rng_state(meta.get("rng"), comm.rank)
        check_rng_state(rng, m.rng_state(), where)
        m.set_rng_state(rng)

    def _start_equal(self, fresh: bool) -> None:
        """Every rank from rank 0's parameters and optimizer state, at the same position; on a fresh
        start, rank r's generators jumped r times (its own dropout masks)."""
        comm, m = self.comm, self.model
        # A rank that did not find the checkpoint (no shared file system) would start afresh: refuse.
        comm.check_same(
            self.step,
            "the step to start from",
            "; is the checkpoint folder on a file system every rank sees?",
        )
        if fresh and hasattr(m, "rng_state") and hasattr(m, "set_rng_state"):
            m.set_rng_state(jump_rng_state(m.rng_state(), comm.rank))
        comm.broadcast_arrays(self.model.params, "the start (parameters from rank 0)")
        osd = self.optimizer.state_dict()
        arrays = osd.pop("arrays")
        names = comm.broadcast_json(sorted(arrays), "the start (optimizer state from rank 0)")
        if names != sorted(arrays):
            comm.abort(f"rank {comm.rank}: the optimizer's state differs from rank 0's")
        comm.broadcast_arrays(arrays, "the start (optimizer state from rank 0)")
        osd = comm.broadcast_json(osd, "the start (optimizer)")
        self.optimizer.load_state_dict({**osd, "arrays": arrays})

    def _allreduce(self, loss: float, n_tokens: int, flags: tuple[bool, bool]):
        """One in-place Allreduce of [n_r·g_r (every gradient), n_r·L_r, n_r split exactly in two, flags]:
        the gradient and loss of the global mean, the global token count, and the agreed stop."""
        grads, names = self.model.grads, list(self.model.params)
        dtype = np.result_type(*(grads[k].dtype for k in names))
        P = sum(grads[k].size for k in names)
        buf = getattr(self, "_buf", None)
        if buf is None or buf.size != P + 5 or buf.dtype != dtype:
            buf = self._buf = np.empty(P + 5, dtype)
        w, at = int(n_tokens), 0
        for k in names:
            g = grads[k]
            np.multiply(g.reshape(-1), dtype.type(w), out=buf[at : at + g.size])
            at += g.size
        # n_r as (n_r >> 12, n_r & 4095): both sums exact in float32 while Σ n_r < 2^36 tokens
        buf[P:] = (loss * w, w >> 12, w & 4095, float(flags[0]), float(flags[1]))
        t0 = time.perf_counter()
        self.comm.allreduce_(buf, f"the gradient Allreduce of step {self.step + 1}")
        self._allreduce_s = time.perf_counter() - t0  # the wait for the slowest rank included
        n = int(round(float(buf[P + 1]))) * 4096 + int(round(float(buf[P + 2])))
        at = 0
        for k in names:
            size, shape = grads[k].size, grads[k].shape
            grads[k] = (buf[at : at + size] / dtype.type(n)).reshape(shape)
            at += size
        self._agreed = "interrupted" if buf[P + 3] > 0 else ("max_time" if buf[P + 4] > 0 else None)
        return float(buf[P]) / n, n

    # ----------------------------------------------------------------- the loop
    def _epoch_batches(self, epoch: int):
        return self.batches(epoch) if callable(self.batches) else self.batches

    def _nonfinite(self, loss: float) -> str | None:
        """What is not finite in this step (the loss or the first bad gradient), or None."""
        if not math.isfinite(loss):
            return f"the loss is {loss}"
        for k, g in self.model.grads.items():
            if not np.isfinite(g).all():
                bad = ~np.isfinite(g)
                kinds = "nan" if np.isnan(g).any() else "inf"
                return f"the gradient of {k!r} has {int(bad.sum())} non-finite values ({kinds})"
        return None

    def _validate(self, share: bool = True) -> float:
        """val_fn in eval mode; under several ranks computed by rank 0 and, with `share`, broadcast (every
        rank then makes the same early-stopping and checkpoint decisions)."""
        val = None
        if self.comm.is_root:
            self.model.eval()
            try:
                val = float(self.val_fn(self.model))
            finally:
                self.model.train()
        if self.comm.size > 1 and share:
            val = self.comm.broadcast_json(
                None if val is None or not math.isfinite(val) else val, f"validation at step {self.step}"
            )
            val = math.nan if val is None else float(val)
        return val

    def _stop_now(self) -> bool:
        """A signal stops the run: in one process as soon as it came; under several ranks after the step
        whose Allreduce carried it (so that every rank stops after the same step)."""
        return self._agreed == "interrupted" if self.comm.size > 1 else self._stop_requested

    def _time_up(self, wall: float) -> bool:
        if self.max_time is None:
            return False
        return self._agreed == "max_time" if self.comm.size > 1 else wall >= self.max_time

    def _total(self, data) -> int | None:
        if self.max_steps is not None:
            return self.max_steps
        if self.epochs is None:
            return None
        try:
            return self.epochs * len(data)
        except TypeError:
            return None

    def _open_bar(self, data, wall: float):
        """The progress bar on stderr. Counted in steps when the run ends after a known number of steps;
        with a time limit, in the fraction of the run done, ``max(steps done / steps, wall / max_time)``
        (whichever limit comes first), so the bar has a total and an ETA even with ``--time`` alone."""
        from tqdm.auto import tqdm

        total = self._total(data)
        if self.max_time is None:
            return tqdm(total=total, initial=self.step, unit="step", dynamic_ncols=True)
        self._bar_steps = total
        bar = tqdm(
            total=1.0,
            initial=self._fraction_done(wall),
            dynamic_ncols=True,
            bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}",
        )
        bar.set_postfix_str(f"step={self.step}", refresh=False)
        return bar

    def _fraction_done(self, wall: float) -> float:
        done = wall / self.max_time
        if self._bar_steps:
            done = max(done, self.step / self._bar_steps)
        return min(done, 1.0)

    def _advance_time_bar(self, bar, wall: float) -> None:
        bar.update(self._fraction_done(wall) - bar.n)

    def fit(self, resume: bool = False) -> TrainResult:
        """Train until max_steps / epochs / max_time / early stopping / a signal (see the module docstring).

        resume : continue from ``<checkpoint_dir>/last`` when it exists (a fresh start otherwise).

        Raises
        ------
        DivergenceError : the run diverged (:class:`NonFiniteError` under the "stop" policy, or the
            ``max_loss`` bound crossed); ``<checkpoint_dir>/last`` holds the last good checkpoint.
        """
        if resume and self.last_path is None:
            raise ValueError("resume: needs the Trainer's checkpoint_dir")
        old_handlers = self._install_signals()  # first: a signal during the resume already stops cleanly
        reason, loss, bar, ckpt = None, None, None, None
        try:
            loaded = resume and (self.last_path / "meta.json").exists()
            if loaded:
                self.load()
            self._agreed = None
            if self.comm.size > 1:
                self._start_equal(fresh=not loaded)
            self._open_metrics(resume)
            t_start = self._t_start = time.perf_counter()
            wall = self.wall_offset
            self.model.train()
            data = self._epoch_batches(self.epoch)
            if self.progress:
                bar = self._open_bar(data, wall)
            while reason is None:
                if self.epochs is not None and self.epoch >= self.epochs:
                    reason = "epochs"
                    break
                data = self._epoch_batches(self.epoch)
                if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
                    it = (data[i] for i in range(self.pos, len(data)))
                else:
                    it = islice(iter(data), self.pos, None)
                consumed, rolled_back = 0, False
                for batch in it:
                    consumed += 1
                    if self._stop_now():
                        reason = "interrupted"
                        break
                    if self.max_steps is not None and self.step >= self.max_steps:
                        reason = "max_steps"
                        break
                    if self._time_up(wall):
                        reason = "max_time"
                        break
                    loss, record = self._train_step(batch)
                    wall = self.wall_offset + time.perf_counter() - t_start
                    record["wall_time"] = round(wall, 6)
                    if "rolled_back_to" in record:
                        self._log(record, None)
                        rolled_back = True
                        break
                    if self.val_fn is not None and self.eval_every and self.step % self.eval_every == 0:
                        record["val_loss"] = val = self._validate()
                        improved, kept = self._improved(val, wall)
                        if kept:
                            record["best"] = True
                        elif not improved and self.patience is not None and self.bad_evals >= self.patience:
                            reason = "early_stopping"
                    self._log(record, bar)
                    if bar is not None and self.max_time is not None:
                        self._advance_time_bar(bar, wall)
                    self._check_bound(record)  # before the save: a diverged state is never `last`
                    if (
                        self.checkpoint_every
                        and self.step % self.checkpoint_every == 0
                        and self.checkpoint_dir
                    ):
                        self.save(wall=wall)
                    if self._stop_now():
                        reason = "interrupted"
                    if reason is not None:
                        break
                else:
                    if consumed == 0 and self.pos == 0:
                        raise ValueError(f"batches: epoch {self.epoch} has no batches (nothing to train on)")
                    self.epoch += 1
                    self.pos = 0
                    self.state = None
                if rolled_back:  # the position came back with the checkpoint: iterate from there
                    continue
                if reason is None and self._stop_now():  # a signal between the last batch and here
                    reason = "interrupted"
            keep_final = False
            if (
                reason != "interrupted"
                and self.val_fn is not None
                and self.comm.is_root  # no other rank waits for it
                and not (self.eval_every and self.step % self.eval_every == 0)
            ):
                # It changes no counter of the course (best_val, bad_evals), so where a run stops cannot
                # change its course; but where it is the lowest validation yet, best/ takes these weights.
                val = self._validate(share=False)
                final = {"step": self.step, "epoch": self.epoch, "val_loss": val, "final": True}
                keep_final = self._lowest(val)
                if keep_final:
                    final["best"] = True
                self._log(final, None)
            ckpt = self.save(wall=wall) if self.checkpoint_dir else None
            # rank 0 only: a copy of last/, no collective (a kill before it leaves best/ the earlier weights)
            if keep_final and ckpt is not None:
                save_checkpoint(self.checkpoint_dir / "best", *load_checkpoint(ckpt))
        finally:
            if bar is not None:
                bar.close()
            self._close_metrics()
            self._restore_signals(old_handlers)
        return TrainResult(self.step, self.epoch, reason, loss, self.best_kept, ckpt)

    def _where_good(self) -> str:
        if self.last_checkpoint_step is None:
            return "no checkpoint had been written"
        return f"the last good checkpoint is {self.last_path} (step {self.last_checkpoint_step})"

    def _check_bound(self, record: dict[str, Any]) -> None:
        """Raise DivergenceError when the loss bound says the run has diverged."""
        if self.max_loss is None:
            return
        why = self.max_loss(record)
        if why is not None:
            raise DivergenceError(f"step {self.step}: diverged: {why}; stopped ({self._where_good()})")

    def _train_step(self, batch) -> tuple[float, dict[str, Any]]:
        lr = float(self.schedule(self.step)) * self.lr_scale
        self.optimizer.lr = lr
        t0 = time.perf_counter()
        if self.carry_state:
            loss, n_tokens, new_state = self.loss_fn(self.model, batch, self.state)
        else:
            loss, n_tokens = self.loss_fn(self.model, batch)
            new_state = None
        loss = float(loss)
        if self.comm.size > 1:  # the global batch's loss and gradient, and whether every rank goes on
            wall = self.wall_offset + time.perf_counter() - self._t_start
            time_up = self.max_time is not None and wall >= self.max_time
            loss, n_tokens = self._allreduce(loss, int(n_tokens), (self._stop_requested, time_up))
        bad = self._nonfinite(loss)
        step = self.step + 1
        record: dict[str, Any] = {"step": step, "epoch": self.epoch, "loss": loss, "lr": lr}
        if bad is not None:
            msg = f"step {step}: {bad}; the update was not applied"
            if self.on_nonfinite == "stop":
                self._log({**record, "nonfinite": bad}, None)
                raise NonFiniteError(f"{msg}; stopped ({self._where_good()})")
            self.lr_scale *= self.lr_backoff
            record.update(nonfinite=bad, skipped=True, grad_norm=None)
            self._warn(f"{msg}; skipped, learning rate scaled to {self.lr_scale:g}×")
            new_state = None  # a state carried out of a broken step is not trusted
        else:
            grads = self.model.grads
            norm = clip_grad_norm(grads, self.clip_norm) if self.clip_norm else global_norm(grads)
            if self.clip_value:
                clip_grad_value(grads, self.clip_value)
            self.optimizer.step(grads)
            record["grad_norm"] = norm
            # Finite loss and gradients can still make infinite weights (an lr of 100): one sum per array.
            broken = first_nonfinite(self.model.params)
            if broken is not None:
                return loss, self._after_broken_update(step, f"parameter {broken}", record)
        dt = time.perf_counter() - t0
        self.step, self.pos, self.state = step, self.pos + 1, new_state
        self.tokens += int(n_tokens)
        record.update(tokens=int(n_tokens), tokens_per_s=round(n_tokens / dt, 1) if dt > 0 else None)
        if self.comm.size > 1:
            record["allreduce_s"] = round(self._allreduce_s, 6)
        return loss, record

    def _after_broken_update(self, step: int, bad: str, record: dict[str, Any]) -> dict[str, Any]:
        """An update already applied in place made a parameter non-finite: it cannot be dropped, only
        undone from the last checkpoint ("skip", lr lowered, the position rewound with it) or stopped on."""
        msg = f"step {step}: after the update, {bad}"
        record.update(nonfinite=f"after the update, {bad}")
        if self.on_nonfinite == "stop" or self.last_checkpoint_step is None:
            self._log(record, None)
            tail = "" if self.on_nonfinite == "stop" else "; no checkpoint to roll back to"
            raise NonFiniteError(f"{msg}{tail}; stopped ({self._where_good()})")
        scale, wall_offset = self.lr_scale * self.lr_backoff, self.wall_offset
        self.load(self.last_path)
        self.lr_scale, self.wall_offset = scale, wall_offset  # the lower lr holds; the clock runs on
        self._warn(
            f"{msg}; rolled back to step {self.step} ({self.last_path}), learning rate scaled to {scale:g}×"
        )
        return {**record, "skipped": True, "rolled_back_to": self.step}

    def _improved(self, val: float, wall: float) -> tuple[bool, bool]:
        """A periodic validation: (improved, kept). Improved where it is below best_val by min_delta
        (bad_evals restarts; else it counts one more); kept where best/ then takes these weights: an
        improvement, unless a session's final validation left lower ones there."""
        if math.isfinite(val) and (self.best_val is None or val < self.best_val - self.min_delta):
            self.best_val, self.bad_evals = val, 0
            kept = self._lowest(val)
            if kept and self.checkpoint_dir:
                self.save(self.checkpoint_dir / "best", wall=wall)
            return True, kept
        self.bad_evals += 1
        return False, False

    def _lowest(self, val: float) -> bool:
        """Whether `val` is below the validation of the weights best/ holds (it then becomes it)."""
        if math.isfinite(val) and (self.best_kept is None or val < self.best_kept):
            self.best_kept = val
            return True
        return False

    # ----------------------------------------------------------------- metrics, progress, signals
    def _open_metrics(self, resume: bool) -> None:
        self._metrics = None
        if self.metrics_path is None:
            return
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.metrics_path.exists():
            # Drop what a killed run logged after its last checkpoint: those steps are run again. The
            # rewrite is atomic (a temporary and a rename): a kill during it leaves the old file whole.
            with open(self.metrics_path, encoding="utf-8", errors="replace") as old:
                write_atomic(self.metrics_path, _rows_up_to(old, self.step))
        elif not resume:
            self.metrics_path.write_text("")
        self._metrics = open(self.metrics_path, "a", encoding="utf-8")  # noqa: SIM115

    def _close_metrics(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None

    def _log(self, record: dict[str, Any], bar) -> None:
        self.history.append(record)
        if self._metrics is not None:
            # Strict JSON: a non-finite number (a nan loss) is written as null; "nonfinite" says why.
            clean = {
                k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()
            }
            self._metrics.write(json.dumps(clean, allow_nan=False) + "\n")
            self._metrics.flush()
        if bar is not None:
            name, factor = self.progress_loss
            post = {name: f"{record['loss'] * factor:.4f}"}
            if self.max_time is None:
                bar.update(1)
            else:  # the time bar counts the fraction done (advanced by the caller): name the step here
                steps = f"/{self._bar_steps}" if self._bar_steps else ""
                post = {"step": f"{self.step}{steps}", **post}
            if record.get("tokens_per_s"):  # smoothed: one step's rate is noisy
                tps = record["tokens_per_s"]
                self._tps = tps if getattr(self, "_tps", None) is None else 0.9 * self._tps + 0.1 * tps
                post["tok/s"] = f"{self._tps:.0f}"
            if self.best_val is not None:
                post["val"] = f"{self.best_val * factor:.4f}"
            bar.set_postfix(post, refresh=False)

    def _warn(self, msg: str) -> None:
        if not self.comm.is_root:  # every rank makes the same decision: rank 0 says it
            return
        import sys

        from tqdm.auto import tqdm

        tqdm.write(f"unrolled: warning: {msg}", file=sys.stderr)

    def _install_signals(self) -> dict[int, Any] | None:
        """First SIGINT/SIGTERM: finish the current step, checkpoint, return. A second: abort through the
        previous handler. Returns the previous handlers (None off the main thread: no handler there)."""
        if threading.current_thread() is not threading.main_thread():
            return None
        sigs = [signal.SIGINT] + ([signal.SIGTERM] if hasattr(signal, "SIGTERM") else [])
        old = {sig: signal.getsignal(sig) for sig in sigs}

        def handler(signum, frame):
            if not self._stop_requested:
                self._stop_requested = True
                name = signal.Signals(signum).name
                _say(
                    f"unrolled: warning: interrupted ({name}): stopping after this step and writing a "
                    "checkpoint (a second signal aborts)"
                )
                return
            self._restore_signals(old)  # abort as if we had never been here
            before = old.get(signum)
            if callable(before):
                before(signum, frame)
            elif before == signal.SIG_DFL:
                signal.raise_signal(signum)
            else:  # a handler installed outside Python
                raise KeyboardInterrupt

        self._stop_requested = False
        for sig, h in old.items():
            if h != signal.SIG_IGN:  # a background job's SIGINT stays ignored
                signal.signal(sig, handler)
        return old

    def _restore_signals(self, old: dict[int, Any] | None) -> None:
        for sig, h in (old or {}).items():
            signal.signal(sig, h if h is not None else signal.SIG_DFL)


def _say(line: str) -> None:
    """One line on stderr from a signal handler: a raw write, which cannot re-enter a Python stream
    that the interrupted code was writing to (that raises RuntimeError: reentrant call)."""
    try:
        os.write(2, (line + "\n").encode("utf-8", "replace"))
    except OSError:  # stderr closed: the stop still happens
        pass


def _rows_up_to(lines: Iterable[str], step: int) -> Iterator[bytes]:
    """The metrics rows up to `step` (inclusive), stopping at the first row cut or garbled by a kill."""
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            return
        if not isinstance(row, dict) or not isinstance(row.get("step", 0), int | float):
            return
        if row.get("step", 0) <= step:
            yield (line.rstrip("\n") + "\n").encode("utf-8")


def _loss_bound(max_loss) -> Callable[[dict[str, Any]], str | None] | None:
    """``max_loss`` as a callable record -> reason (a number bounds every step's training loss)."""
    if max_loss is None or callable(max_loss):
        return max_loss
    if isinstance(max_loss, bool) or not isinstance(max_loss, int | float) or not math.isfinite(max_loss):
        raise ValueError(f"max_loss: expected a finite number, a callable or None, got {max_loss!r}")
    return LossBound(max_loss, "loss")


def _schedule_dict(schedule) -> dict | None:
    try:
        return schedule_to_dict(schedule)
    except ValueError:
        return None  # a user's own callable: not recorded
