"""Which saved model a command reads: the one rule every command applies to its model argument.

The argument is a run directory (what ``unrolled train ...`` or ``unrolled demo`` wrote) or a checkpoint
directory (a folder with a ``meta.json`` at its top). What each application leaves in its run::

    charlm (train charlm, demo)  DIR/best  DIR/last                (no model at the top)
    classify, forecast           DIR (best validation weights)    DIR/training/{best,last}: training state
    translate                    DIR (best validation weights)    DIR/train/{best,last}: loadable too

The rule (:func:`resolve_model`):

- no ``checkpoint`` asked: a checkpoint directory means itself; a run directory without one at its top
  means its ``best/`` when present, else its ``last/``;
- ``checkpoint="best"`` or ``"last"``: that checkpoint of the run, looked for in ``DIR/``, ``DIR/train/``
  and ``DIR/training/``. ``best`` of a run that saved its best weights at its top (classify, forecast,
  translate) is that top model. A Trainer checkpoint without an ``app`` in its meta (the training state of
  classify and forecast) is refused: it holds no model a command can use.

The chosen folder comes back with a one-line description (:meth:`ModelChoice.describe`), e.g.
``using runs/mine/best (best validation, step 1200)``, which the commands print on standard error. Only
meta.json files are read here; loading and checking the model is the application's loader's job.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CHECKPOINTS", "ModelChoice", "resolve_model"]

CHECKPOINTS = ("best", "last")
# Where a run keeps its Trainer's checkpoints: charlm at its top, translate in train/, classify and
# forecast in training/ (see unrolled.apps._training.trainer_paths and translate.TRAINER_SUB).
_TRAINER_HOMES = ("", "train", "training")


@dataclass(frozen=True)
class ModelChoice:
    """The checkpoint directory a command reads, and why.

    Attributes
    ----------
    path : the checkpoint directory (it holds ``meta.json``), or the argument itself when it holds none
        (the application's loader then says what is wrong with it).
    which : ``"best"``, ``"last"`` or ``"given"`` (the argument is itself the checkpoint).
    detail : how the model was chosen, in words, e.g. ``"best validation, step 1200"``.
    """

    path: Path
    which: str
    detail: str

    def describe(self) -> str:
        """The line a command prints on standard error: ``using PATH (DETAIL)``."""
        return f"using {self.path} ({self.detail})"


def _meta(directory: Path) -> dict[str, Any] | None:
    """The ``meta`` of ``directory/meta.json``; None when it is missing or unreadable (never raises)."""
    try:
        record = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    meta = record.get("meta") if isinstance(record, dict) else None
    return meta if isinstance(meta, dict) else None


def _is_checkpoint(directory: Path) -> bool:
    return (directory / "meta.json").is_file() and not directory.is_symlink()


def _is_trainer(meta: dict[str, Any] | None) -> bool:
    """Whether a checkpoint's meta is a Trainer's (a run's best/ or last/), not a model saved on its own."""
    return meta is not None and meta.get("kind") == "unrolled.train"


def _step(meta: dict[str, Any] | None) -> int | None:
    trainer = meta.get("trainer") if meta else None
    step = trainer.get("step") if isinstance(trainer, dict) else None
    return step if isinstance(step, int) else None


def _detail(label: str, meta: dict[str, Any] | None) -> str:
    step = _step(meta)
    return label if step is None else f"{label}, step {step}"


def _trainer_checkpoint(root: Path, name: str) -> Path | None:
    """``root/<home>/name`` of the first Trainer home that holds that checkpoint."""
    for home in _TRAINER_HOMES:
        candidate = root / home / name if home else root / name
        if _is_checkpoint(candidate):
            return candidate
    return None


def resolve_model(directory: str | os.PathLike, checkpoint: str | None = None) -> ModelChoice:
    """The checkpoint directory to read for a command's model argument (the rule of the module docstring).

    Parameters
    ----------
    directory : a run directory or a checkpoint directory.
    checkpoint : None (the default rule), ``"best"`` or ``"last"``.

    Raises
    ------
    ValueError
        `checkpoint` not one of :data:`CHECKPOINTS`; `directory` missing or not a directory; the asked
        checkpoint absent, or holding training state only.
    """
    if checkpoint is not None and checkpoint not in CHECKPOINTS:
        raise ValueError(f"--checkpoint: expected one of best, last, got {checkpoint!r}")
    root = Path(directory)
    if not root.is_dir():
        what = "not a directory" if root.exists() else "no such directory"
        raise ValueError(f"{root}: {what} (expected a run directory or a checkpoint directory)")
    top = _meta(root) if _is_checkpoint(root) else None

    if checkpoint is None:
        if _is_checkpoint(root):
            return _given(root, top)
        for name in CHECKPOINTS:  # best first: after over-fitting, last is the worse model
            if _is_checkpoint(root / name):
                return _choice(root / name, name)
        return ModelChoice(root, "given", "checkpoint")  # the loader says why this is not a model

    if root.name == checkpoint and _is_checkpoint(root) and _trainer_checkpoint(root, checkpoint) is None:
        return _choice(root, checkpoint)  # `DIR/best --checkpoint best`: the folder asked for
    if checkpoint == "best" and top is not None and "app" in top and not _is_trainer(top):
        # classify, forecast, translate: the run's model at its top is its best validation weights
        return _given(root, top)
    found = _trainer_checkpoint(root, checkpoint)
    if found is None:
        raise ValueError(f"--checkpoint {checkpoint}: {root} holds no {checkpoint}/ checkpoint")
    meta = _meta(found)
    if meta is not None and "app" not in meta:
        raise ValueError(
            f"--checkpoint {checkpoint}: {found} holds training state only, not a model to use; {root} "
            "holds the model of the best validation (the default)"
        )
    return _choice(found, checkpoint)


def _choice(path: Path, name: str) -> ModelChoice:
    label = "best validation" if name == "best" else "last checkpoint"
    return ModelChoice(path, name, _detail(label, _meta(path)))


def _given(root: Path, top: dict[str, Any] | None) -> ModelChoice:
    """A checkpoint directory given as such: itself, described by what it is."""
    if root.name in CHECKPOINTS and _is_trainer(top):  # e.g. runs/mine/best
        return _choice(root, root.name)
    best = _trainer_checkpoint(root, "best")
    if best is not None and best != root:
        # the run restored its best validation weights into the model at its top before saving it
        return ModelChoice(root, "best", _detail("best validation", _meta(best)))
    return ModelChoice(root, "given", _detail("checkpoint", top))
