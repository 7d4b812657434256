"""Configuration dataclasses to and from plain JSON-able dicts: one helper for every config of the package.

A config is a dataclass whose fields are JSON values (numbers, strings, booleans, None, lists). Saving
is ``to_dict(cfg)``; loading is ``from_dict(Cls, d, what="a character model")``, which refuses a dict
that is not a dict, and unknown fields (a config of something else), with one message naming what was
expected. The dataclass's own ``__post_init__`` then checks types and ranges.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

C = TypeVar("C")


def to_dict(cfg) -> dict[str, Any]:
    """A JSON-able dict of every field of the dataclass ``cfg``."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[C], d: Any, what: str | None = None, *, ignore_unknown: bool = False) -> C:
    """The dataclass ``cls`` from a dict made by :func:`to_dict`.

    Unknown fields are an error naming them (``what`` says whose config was expected), unless
    ``ignore_unknown``: then they are dropped (for configs that older versions wrote with more fields).
    """
    if not isinstance(d, dict):
        raise ValueError(f"config: expected a dict, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown and not ignore_unknown:
        tail = f" (not {what}'s config)" if what else ""
        raise ValueError(f"config: unknown fields {sorted(unknown)}{tail}")
    return cls(**{k: v for k, v in d.items() if k in known})
