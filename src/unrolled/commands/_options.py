"""Command-line options built from a configuration dataclass, so each default lives in one place.

A field declared with :func:`unrolled.apps.fields.option` carries its help text (and type/choices where the
default does not tell them); :func:`add_config_arguments` turns every such field into ``--field-name``, and
:func:`config_from_args` builds the dataclass back from the parsed namespace.
"""

from __future__ import annotations

import argparse
import dataclasses


def _csv_list(s: str) -> list[str]:
    return [p.strip() for p in s.split(",") if p.strip()]


def add_config_arguments(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """Add ``--name`` for every :func:`~unrolled.apps.fields.option` field of ``cls`` not in ``skip``."""
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


def add_config_options(parser: argparse.ArgumentParser, cls, exclusive: tuple[str, ...] = ()) -> None:
    """``--option`` per field of the dataclass `cls` as :func:`add_config_arguments` does, with two changes:
    an option not given stays absent from the parsed namespace, so a resumed run can tell what the user
    changed, and the fields named in `exclusive` exclude each other."""
    add_config_arguments(parser, cls, skip=exclusive)
    group = parser.add_mutually_exclusive_group() if exclusive else parser
    for f in dataclasses.fields(cls):
        if f.name in exclusive:
            m = f.metadata
            shown = "" if f.default is None else f" (default: {f.default})"
            group.add_argument(
                "--" + f.name.replace("_", "-"), dest=f.name, type=m["type"] or type(f.default),
                metavar=m["metavar"], help=m["help"] + shown,
            )  # fmt: skip
    names = {f.name for f in dataclasses.fields(cls)}
    for action in parser._actions:  # not set_defaults: that would put the SUPPRESS marker in the namespace
        if action.dest in names:
            action.default = argparse.SUPPRESS


def given_options(args: argparse.Namespace, cls) -> dict:
    """The fields of dataclass ``cls`` present in ``args`` (with argparse.SUPPRESS: those the user gave)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def config_from_args(cls, args: argparse.Namespace, **overrides):
    """The dataclass ``cls`` from the parsed options (fields absent from ``args`` keep their default)."""
    return cls(**{**given_options(args, cls), **overrides})
