"""The applications' use of :class:`unrolled.train.Trainer`: validate once per epoch, stop early, and end
with the weights of the best validation — the Trainer's ``best`` checkpoint — not the last ones."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from unrolled.checkpoint import load_checkpoint, restore_arrays
from unrolled.optim import Adam, CosineLR
from unrolled.rundir import RunDir
from unrolled.train import Trainer

# The margin of the divergence bounds above "guessing uniformly" (ln K nats for K classes): a model this
# much worse than a uniform guess, for long enough, is not learning but diverging.
MARGIN_NATS = 1.0


def trainer_paths(workdir: str | os.PathLike | RunDir, sub: str) -> tuple[Path, Path]:
    """(checkpoint folder, metrics file) of a Trainer writing into `workdir`.

    A :class:`~unrolled.rundir.RunDir` (what the command line passes): the folder `sub` inside the run,
    both paths checked by :meth:`RunDir.path` (a symbolic link there is refused, never written through).
    A plain folder (a library user's): that folder itself, as it is.
    """
    if isinstance(workdir, RunDir):
        return workdir.path(sub), workdir.path(sub, "metrics.jsonl")
    return Path(workdir), Path(workdir) / "metrics.jsonl"


def model_dir(directory: str | os.PathLike | RunDir) -> Path:
    """Where a model is saved: the top of a :class:`~unrolled.rundir.RunDir` (its ``meta.json`` checked
    not to be a link), or the plain folder given."""
    if isinstance(directory, RunDir):
        directory.path("meta.json")  # raises for a link: the checkpoint writer must not follow one
        return directory.root
    return Path(directory)


def training_loss_bound(uniform_loss: float, steps_per_epoch: int):
    """The divergence bound of a classifier-like run (see :data:`MARGIN_NATS`): every training loss of a
    whole epoch (at least 3 steps in a row) above the loss of a uniform guess plus the margin.

    The training loss, not the validation one: overfitting drives the validation loss up (confident
    mistakes) while the training loss keeps falling; a divergence drives both up."""
    from unrolled.train import LossBound

    return LossBound(uniform_loss + MARGIN_NATS, "loss", times=max(3, int(steps_per_epoch)))


def fit_best(
    model,
    batches: Callable,
    loss_fn: Callable,
    val_fn: Callable,
    *,
    steps_per_epoch: int,
    lr: float,
    clip: float,
    epochs: int,
    patience: int,
    max_minutes: float | None = None,
    workdir: str | Path | RunDir | None = None,
    resume: bool = False,
    log: Callable[[str], None] = print,
    log_every: int = 1,
    schedule: str = "constant",
    max_loss=None,
) -> dict:
    """Train ``model`` with Adam and global-norm clipping, validating after every epoch; restore the
    weights of the lowest validation value. Returns a summary of the run.

    schedule : "constant" learning rate, or "cosine" decay to zero over ``epochs``.
    workdir : where the Trainer keeps ``last`` / ``best`` checkpoints and ``metrics.jsonl`` (so ``resume``
        continues an interrupted run exactly): a folder, or a :class:`~unrolled.rundir.RunDir` whose
        ``training/`` folder is used (see :func:`trainer_paths`); a temporary folder when None.
    max_loss : the Trainer's divergence bound (e.g. :class:`~unrolled.train.LossBound`); crossing it raises
        :class:`~unrolled.train.DivergenceError`.
    """
    tmp = tempfile.TemporaryDirectory(prefix="unrolled-") if workdir is None else None
    workdir, metrics_path = trainer_paths(tmp.name if tmp is not None else workdir, "training")
    best = {"val": float("inf"), "epoch": 0}
    t0 = time.perf_counter()

    def validate(m) -> float:
        v = float(val_fn(m))
        epoch = trainer.epoch + 1  # the epoch whose last step this is
        if v < best["val"]:
            best.update(val=v, epoch=epoch)
        if epoch == 1 or epoch % log_every == 0:
            log(f"epoch {epoch:4d}  validation {v:.4f}  best {best['val']:.4f} @ {best['epoch']}  "
                f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
        return v

    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule: expected 'constant' or 'cosine', got {schedule!r}")
    trainer = Trainer(
        model,
        Adam(model.params, lr=lr),
        batches,
        loss_fn,
        val_fn=validate,
        schedule=CosineLR(lr, epochs * steps_per_epoch) if schedule == "cosine" else None,
        epochs=epochs,
        max_time=60.0 * max_minutes if max_minutes else None,
        clip_norm=clip,
        eval_every=steps_per_epoch,
        patience=patience,
        checkpoint_dir=workdir,
        metrics_path=metrics_path,
        progress=sys.stderr.isatty(),
        max_loss=max_loss,
    )
    try:
        result = trainer.fit(resume=resume)
        if not (workdir / "best" / "meta.json").exists():
            raise RuntimeError("training ended before its first validation: no best weights to keep")
        arrays, _ = load_checkpoint(workdir / "best")
        restore_arrays(model.params, arrays, "model/", what=f"checkpoint {workdir / 'best'}")
    finally:
        if tmp is not None:
            tmp.cleanup()
    model.eval()
    # A stop (Ctrl-C) right after an epoch's last step and its validation leaves the Trainer's epoch counter
    # one short (it advances when the next epoch begins); that epoch is done, and its validation may be
    # the best: count it, or the summary says "after 36 epochs ... best 37".
    epochs = result.epoch + (1 if trainer.pos >= steps_per_epoch else 0)
    log(f"stopped: {result.reason} after {epochs} epoch{'s' * (epochs != 1)} ({result.step} steps); "
        f"best validation {result.best_val_loss:.4f} (epoch {best['epoch']})")  # fmt: skip
    return {
        "steps": result.step,
        "epochs": epochs,
        "stopped": result.reason,
        "best_epoch": best["epoch"],
        "best_val": result.best_val_loss,
        "seconds": round(time.perf_counter() - t0, 2),
    }
