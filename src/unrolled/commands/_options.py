"""Command-line options built from a configuration dataclass, so each default lives in one place.

A field declared with :func:`option` carries its help text (and type/choices where the default does not
tell them); :func:`add_config_arguments` turns every such field into ``--field-name``, and
:func:`config_from_args` builds the dataclass back from the parsed namespace.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any


def option(default: Any, help: str, type=None, choices=None, metavar: str | None = None) -> Any:
    """A dataclass field with its command-line help (``type`` defaults to the default's type)."""
    return dataclasses.field(
        default=default, metadata={"help": help, "type": type, "choices": choices, "metavar": metavar}
    )


def _csv_list(s: str) -> list[str]:
    return [p.strip() for p in s.split(",") if p.strip()]


def add_config_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """Add ``--name`` for every :func:`option` field of ``cls`` not in ``skip``."""
    for f in dataclasses.fields(cls):
        if f.name in skip or "help" not in f.metadata:
            continue
        m, flag = f.metadata, "--" + f.name.replace("_", "-")
        default = f.default
        if default is None or default == ():
            shown = ""
        else:
            shown = f" (default: {','.join(default) if isinstance(default, tuple) else default})"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=m["help"])
            continue
        typ = m["type"] or (type(default) if default is not None else str)
        if typ in (list, tuple):
            typ = _csv_list  # a comma-separated list
        parser.add_argument(
            flag,
            type=typ,
            default=default,
            choices=m["choices"],
            metavar=m["metavar"],
            help=m["help"] + shown,
        )


def given_options(args: argparse.Namespace, cls) -> dict:
    """The fields of dataclass ``cls`` present in ``args`` (with argparse.SUPPRESS: those the user gave)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def config_from_args(cls, args: argparse.Namespace, **overrides):
    """The dataclass ``cls`` from the parsed options (fields absent from ``args`` keep their default)."""
    return cls(**{**given_options(args, cls), **overrides})
