"""The applications' use of :class:`unrolled.train.Trainer`: validate once per epoch, stop early, and end
with the weights of the best validation — the Trainer's ``best`` checkpoint — not the last ones."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from unrolled.checkpoint import load_checkpoint, restore_arrays
from unrolled.optim import Adam, CosineLR
from unrolled.train import Trainer


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
    workdir: str | Path | None = None,
    resume: bool = False,
    log: Callable[[str], None] = print,
    log_every: int = 1,
    schedule: str = "constant",
) -> dict:
    """Train ``model`` with Adam and global-norm clipping, validating after every epoch; restore the
    weights of the lowest validation value. Returns a summary of the run.

    schedule : "constant" learning rate, or "cosine" decay to zero over ``epochs``.
    workdir : where the Trainer keeps ``last`` / ``best`` checkpoints and ``metrics.jsonl`` (so ``resume``
        continues an interrupted run exactly); a temporary folder when None.
    """
    tmp = tempfile.TemporaryDirectory(prefix="unrolled-") if workdir is None else None
    workdir = Path(tmp.name if tmp is not None else workdir)
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
        metrics_path=workdir / "metrics.jsonl",
        progress=sys.stderr.isatty(),
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
    log(f"stopped: {result.reason} after {result.epoch} epochs ({result.step} steps); best validation "
        f"{result.best_val_loss:.4f}")  # fmt: skip
    return {
        "steps": result.step,
        "epochs": result.epoch,
        "stopped": result.reason,
        "best_epoch": best["epoch"],
        "best_val": result.best_val_loss,
        "seconds": round(time.perf_counter() - t0, 2),
    }
