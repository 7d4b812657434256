"""What a training checkpoint's meta must hold before :meth:`unrolled.train.Trainer.load` may use it.

The seal of :mod:`unrolled.checkpoint` catches accidents; these checks catch the rest (a hand-edited or
forged file): every field the Trainer reads has its type and range, the optimizer's hyper-parameters are
its own and accepted by its own constructor, its slots are shaped as its parameters, the generators'
states have exactly the structure the model writes. Each failure is one :class:`CheckpointError`
``<where>: expected <what>, got <value>``; a checkpoint that passes can be loaded without failing half-way.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from unrolled.checkpoint import CheckpointError

__all__ = ["check_optimizer_state", "check_rng_state", "check_trainer_state", "need"]


def need(cond: bool, where: str, what: str, got: Any) -> None:
    if not cond:
        shown = repr(got)
        raise CheckpointError(f"{where}: expected {what}, got {shown[:80]}{'…' if len(shown) > 80 else ''}")


def check_rng_state(rng: Any, ours: Any, where: str) -> None:
    """The generators' states as save() writes them: exactly the structure of the model's own (their
    setters would take a bool for an int), and none only for a model without generators (with them, the
    dropout masks would silently differ on resume)."""
    need(_like(rng, ours), f"{where}: rng", "the states of this model's generators", rng)


def _like(theirs: Any, ours: Any) -> bool:
    """`theirs` has the structure of `ours`: the same keys, lengths and JSON types all the way down."""
    if isinstance(ours, dict):
        return (
            isinstance(theirs, dict)
            and theirs.keys() == ours.keys()
            and all(_like(theirs[k], ours[k]) for k in ours)
        )
    if isinstance(ours, list | tuple):
        return isinstance(theirs, list) and len(theirs) == len(ours) and all(map(_like, theirs, ours))
    if isinstance(ours, bool) or ours is None:
        return theirs is ours or type(theirs) is type(ours)
    if isinstance(ours, int | float):
        return _is_number(theirs) and (isinstance(theirs, int) or not isinstance(ours, int))
    return type(theirs) is type(ours)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def check_trainer_state(t: Any, arrays: dict[str, np.ndarray], where: str) -> dict[str, Any]:
    """The ``trainer`` entry of a training checkpoint: every counter's type and range, and the carried
    state's arrays (``state/0..n-1``) consistent with its kind."""
    keys = ("step", "epoch", "pos", "lr_scale", "best_val", "bad_evals", "tokens", "wall_time", "state_kind")
    # best_kept (the validation of the weights in best/) is newer: a checkpoint without it held the best
    # periodic validation there, best_val
    need(
        isinstance(t, dict) and set(t) - {"best_kept"} == set(keys),
        f"{where}: trainer",
        f"a dict of {list(keys)} (and best_kept)",
        sorted(t) if isinstance(t, dict) else t,
    )
    w = f"{where}: trainer "
    for k in ("step", "epoch", "pos", "bad_evals", "tokens"):
        need(_is_count(t[k]), w + k, "an integer >= 0", t[k])
    need(
        _is_number(t["lr_scale"]) and 0 <= t["lr_scale"] <= 1,
        w + "lr_scale",
        "a number in [0, 1]",
        t["lr_scale"],
    )
    need(
        t["best_val"] is None or _is_number(t["best_val"]),
        w + "best_val",
        "null or a finite number",
        t["best_val"],
    )
    t = {"best_kept": t["best_val"], **t}
    need(
        t["best_kept"] is None or _is_number(t["best_kept"]),
        w + "best_kept",
        "null or a finite number",
        t["best_kept"],
    )
    need(_is_number(t["wall_time"]) and t["wall_time"] >= 0, w + "wall_time", "seconds >= 0", t["wall_time"])
    kind = t["state_kind"]
    n = sum(k.startswith("state/") for k in arrays)
    need(kind is None or isinstance(kind, str), w + "state_kind", "null or a type name", kind)
    need(
        {k for k in arrays if k.startswith("state/")} == {f"state/{i}" for i in range(n)},
        f"{where}: arrays",
        "the carried state as state/0..state/n-1",
        sorted(arrays)[:5],
    )
    expected = (
        "no state/ arrays" if kind is None else ("1+ state/ arrays" if kind == "tuple" else "1 state/ array")
    )
    need(
        n == 0 if kind is None else (n >= 1 if kind == "tuple" else n == 1),
        w + "state_kind",
        f"{kind!r} with {expected}",
        f"{n} arrays",
    )
    return t


def check_optimizer_state(osd: Any, arrays: dict[str, np.ndarray], optimizer, where: str) -> dict[str, Any]:
    """The ``optimizer`` entry and ``optim/`` arrays, checked against this optimizer so that loading them
    can neither fail half-way nor set anything but its own hyper-parameters to values it accepts."""
    ours = optimizer.state_dict()
    ours.pop("arrays")
    w = f"{where}: optimizer"
    need(
        isinstance(osd, dict) and set(osd) == set(ours),
        w,
        f"a dict of {sorted(ours)}",
        sorted(osd) if isinstance(osd, dict) else osd,
    )
    need(osd["type"] == ours["type"], w + " type", repr(ours["type"]) + " (this optimizer)", osd["type"])
    need(_is_count(osd["t"]), w + " t", "an integer >= 0", osd["t"])
    need(_is_number(osd["lr"]) and osd["lr"] >= 0, w + " lr", "a finite number >= 0", osd["lr"])
    hyper = osd["hyper"]
    need(
        isinstance(hyper, dict) and set(hyper) == set(ours["hyper"]),
        w + " hyper",
        f"the entries {sorted(ours['hyper'])}",
        sorted(hyper) if isinstance(hyper, dict) else hyper,
    )
    for k, mine in ours["hyper"].items():
        v = hyper[k]
        if isinstance(mine, bool):
            ok = isinstance(v, bool)
        elif isinstance(mine, list | tuple):
            ok = isinstance(v, list) and len(v) == len(mine) and all(_is_number(x) and x >= 0 for x in v)
        else:
            ok = _is_number(v) and v >= 0
        need(ok, f"{w} hyper {k}", f"a value like {mine!r}", v)
    try:  # the optimizer's own range checks (betas < 1, …), on a throwaway: its slots are lazy
        type(optimizer)(optimizer.params, lr=osd["lr"], **hyper)
    except ValueError as e:
        raise CheckpointError(f"{w} hyper: {e}") from None
    except TypeError:  # an optimizer whose constructor does not take its hyper-parameters by name
        pass
    for key, a in arrays.items():
        if not key.startswith("optim/"):
            continue
        slot, _, k = key[len("optim/") :].partition("/")
        p = optimizer.params.get(k)
        ok = slot in optimizer.state and p is not None and a.shape == p.shape and a.dtype == p.dtype
        need(
            ok,
            f"{where}: array {key!r}",
            "a slot of this optimizer, shaped and typed as its parameter",
            f"{a.dtype.name}{a.shape}",
        )
    return {**osd, "arrays": {k[len("optim/") :]: v for k, v in arrays.items() if k.startswith("optim/")}}
