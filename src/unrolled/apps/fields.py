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
