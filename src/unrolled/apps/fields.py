"""Config fields that carry their command-line help, so each default and its explanation live in one place.

A field declared with :func:`option` is an ordinary dataclass field whose metadata holds the help text (and
type/choices/metavar where the default does not tell them). The apps declare their configs with it; the
command line (:mod:`unrolled.commands._options`) turns each such field into ``--field-name``. Nothing here
imports argparse: the apps stay usable, and testable, without the command line.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def option(default: Any, help: str, type=None, choices=None, metavar: str | None = None) -> Any:
    """A dataclass field with its command-line help (``type`` defaults to the default's type)."""
    return dataclasses.field(
        default=default, metadata={"help": help, "type": type, "choices": choices, "metavar": metavar}
    )


# The recurrent cell's variant options, shared by the apps that train a SequenceModel (charlm, forecast,
# classify): declare them in the config dataclass with these, check them with check_cell_variants, pass
# them on with cell_variants. Equations: unrolled.cells.lstm_variant / gru_variant; zoneout: layers.py.
def layer_norm_option() -> Any:
    return option(False, "layer-normalised LSTM/GRU (Ba et al. 2016): LN on the pre-activations and the cell")


def peephole_option() -> Any:
    return option(False, "LSTM with peephole connections from the cell to its gates")


def proj_size_option() -> Any:
    return option(0, "LSTM: project h to this many units (torch's proj_size; 0 = none, else < --hidden)")


def zoneout_option() -> Any:
    return option(0.0, "zoneout probability: each unit keeps its previous state with it (training)")


VARIANT_FIELDS = ("layer_norm", "peephole", "proj_size", "zoneout")


def check_cell_variants(cfg) -> None:
    """The variant options of an app config against its ``cell`` and ``hidden``, the messages naming the
    command-line flags."""
    if not 0.0 <= cfg.zoneout < 1.0 or isinstance(cfg.zoneout, bool):
        raise ValueError(f"--zoneout: expected a probability in [0, 1), got {cfg.zoneout!r}")
    if isinstance(cfg.proj_size, bool) or not isinstance(cfg.proj_size, int) or cfg.proj_size < 0:
        raise ValueError(f"--proj-size: expected 0 or a positive integer, got {cfg.proj_size!r}")
    if cfg.proj_size and cfg.proj_size >= cfg.hidden:
        raise ValueError(f"--proj-size {cfg.proj_size}: expected fewer units than --hidden {cfg.hidden}")
    for name in ("peephole", "proj_size"):
        if getattr(cfg, name) and cfg.cell != "lstm":
            raise ValueError(f"--{name.replace('_', '-')}: an LSTM option; --cell is {cfg.cell}")
    if cfg.layer_norm and cfg.cell == "rnn":
        raise ValueError("--layer-norm: an LSTM/GRU option; --cell is rnn")


def cell_variants(cfg) -> dict[str, Any]:
    """The variant options of an app config as :class:`unrolled.models.ModelConfig` keyword arguments."""
    return {name: getattr(cfg, name) for name in VARIANT_FIELDS}
