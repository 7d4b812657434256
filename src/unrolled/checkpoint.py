"""Checkpoints: arrays in safetensors, everything else in JSON beside them; atomic; never pickle.

A checkpoint is a directory::

    directory/
      meta.json                         the commit record: format, version, the arrays file's name,
                                        size and SHA-256, each array's dtype and shape, and ``meta``
                                        (config, optimizer hyper-parameters, RNG states, step, …)
      arrays-<sha256[:16]>.safetensors  the arrays, named by their content

Writing is atomic at the level of the whole checkpoint: the arrays file is written to a temporary
file, fsynced and renamed to its content-derived name; then ``meta.json`` is written the same way and
``os.replace``-d over the old one — that single rename is the commit point. A crash before it leaves
the previous checkpoint (its meta.json still names its own, untouched arrays file); a crash after it
leaves the new one. So a reader never sees a new meta.json with old arrays or the reverse, which
renaming a pair of files (or a directory over a non-empty one, impossible on POSIX) could not
guarantee. Afterwards the arrays file the old meta.json named is removed, with orphans of crashed
saves and dead writers' temporaries: only files of this library's own exact name shapes, never a
user's ``notes.tmp`` or ``arrays-old.safetensors``.

Loading parses JSON and safetensors only — nothing in a checkpoint is ever executed — and checks
the SHA-256, the size and every array's dtype/shape against meta.json, so a truncated or corrupted
file, a file that is not a checkpoint, or one of another architecture gives a :class:`CheckpointError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from unrolled._files import remove_own_temporaries, write_bytes_atomic

__all__ = [
    "CheckpointError",
    "is_checkpoint",
    "load_checkpoint",
    "load_model",
    "restore_arrays",
    "save_checkpoint",
    "save_model",
]

FORMAT = "unrolled-checkpoint"
VERSION = 1
META = "meta.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, not a checkpoint, corrupt, truncated, or incompatible."""


def _fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to an own temporary beside `path` (``.unrolled-<pid>-<hex>.tmp``, a name only this
    library uses, so cleanup can never match a user's file), fsync it, then os.replace it onto `path`."""
    write_bytes_atomic(path, data)


_ARRAYS_NAME = re.compile(r"arrays-([0-9a-f]{16})\.safetensors")
_ORPHAN_AGE_S = 60.0


def _named_arrays_file(directory: Path) -> str | None:
    """The arrays file the checkpoint now in `directory` names, if its meta.json is ours; else None."""
    try:
        record = json.loads((directory / META).read_bytes())
        name = record["arrays_file"] if record.get("format") == FORMAT else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return name if isinstance(name, str) and _ARRAYS_NAME.fullmatch(name) else None


def _remove_superseded(directory: Path, keep: str, previous: str | None) -> None:
    """After a commit, delete what this library wrote and no longer needs, and nothing else.

    An arrays file goes only if it has our exact name shape ``arrays-<16 hex>.safetensors`` and is
    provably ours: the one the previous meta.json named, or one whose content hash is its name and
    that is older than a minute (an orphan of a save that crashed before its commit; a younger one may
    be another writer's, between its rename and its commit). A user's ``arrays-old.safetensors`` or an
    ``arrays-<hex>`` file of other bytes stays. Temporaries go only by :func:`remove_own_temporaries`.
    """
    now = time.time()
    for name in os.listdir(directory):
        m = _ARRAYS_NAME.fullmatch(name)
        p = directory / name
        if m is None or name == keep or p.is_symlink() or not p.is_file():
            continue
        orphan = now - p.stat().st_mtime > _ORPHAN_AGE_S
        if name == previous or (orphan and hashlib.sha256(p.read_bytes()).hexdigest()[:16] == m.group(1)):
            p.unlink(missing_ok=True)
    remove_own_temporaries(directory)


def save_checkpoint(
    directory: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict[str, Any]
) -> Path:
    """Write a checkpoint atomically (see the module docstring); replaces any checkpoint there.

    Parameters
    ----------
    directory : the checkpoint directory (created with its parents if needed).
    arrays : name -> ndarray (any shape; numeric or bool dtypes safetensors supports).
    meta : JSON-able dict (config, optimizer state without arrays, RNG states, step, …).

    Returns
    -------
    The directory as a Path.
    """
    from safetensors.numpy import save

    directory = Path(directory)
    if not isinstance(arrays, dict) or not all(isinstance(v, np.ndarray) for v in arrays.values()):
        raise TypeError("arrays: expected a dict name -> numpy.ndarray")
    try:
        meta_json = json.dumps(meta)
    except (TypeError, ValueError) as e:
        raise TypeError(f"meta: expected a JSON-able dict, got {e}") from e
    directory.mkdir(parents=True, exist_ok=True)
    blob = save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
    digest = hashlib.sha256(blob).hexdigest()
    name = f"arrays-{digest[:16]}.safetensors"
    _write_atomic(directory / name, blob)
    record = {
        "format": FORMAT,
        "version": VERSION,
        "arrays_file": name,
        "arrays_bytes": len(blob),
        "arrays_sha256": digest,
        "arrays": {k: [v.dtype.str, list(v.shape)] for k, v in arrays.items()},
        "meta": json.loads(meta_json),
    }
    previous = _named_arrays_file(directory)  # read before the commit replaces it
    _write_atomic(directory / META, json.dumps(record, indent=1).encode())  # the commit point
    _fsync_dir(directory)
    _remove_superseded(directory, keep=name, previous=previous)
    return directory


def is_checkpoint(directory: str | os.PathLike) -> bool:
    """True when `directory` holds a meta.json (whether or not it is valid)."""
    return (Path(directory) / META).is_file()


def load_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Returns
    -------
    arrays : name -> ndarray (writable copies), meta : the dict given to save_checkpoint.

    Raises
    ------
    CheckpointError : missing, not a checkpoint, truncated or corrupted (size / SHA-256 / header
        mismatch), or written by an incompatible version.
    """
    from safetensors.numpy import load

    directory = Path(directory)
    meta_path = directory / META
    if not directory.exists():
        raise CheckpointError(f"checkpoint {directory}: no such directory")
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint {directory}: not a checkpoint (expected a directory with {META})")
    if not meta_path.is_file():
        raise CheckpointError(f"checkpoint {directory}: not a checkpoint (no {META})")
    try:
        record = json.loads(meta_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {directory}: {META} is corrupt or not JSON ({e})") from e
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {directory}: not an unrolled checkpoint ({META} lacks format {FORMAT!r})"
        )
    if record.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {directory}: format version {record.get('version')!r}, this unrolled reads {VERSION}"
        )
    try:
        name, size, digest = record["arrays_file"], record["arrays_bytes"], record["arrays_sha256"]
        listing, meta = record["arrays"], record["meta"]
    except KeyError as e:
        raise CheckpointError(f"checkpoint {directory}: {META} is missing the entry {e}") from e
    if not isinstance(name, str) or "/" in name or not name.startswith("arrays-"):
        raise CheckpointError(f"checkpoint {directory}: {META} names an invalid arrays file {name!r}")
    path = directory / name
    if not path.is_file():
        raise CheckpointError(f"checkpoint {directory}: arrays file {name} is missing")
    blob = path.read_bytes()
    if len(blob) != size:
        raise CheckpointError(
            f"checkpoint {directory}: arrays file {name} is truncated or corrupt "
            f"({len(blob)} bytes, expected {size})"
        )
    if hashlib.sha256(blob).hexdigest() != digest:
        raise CheckpointError(f"checkpoint {directory}: arrays file {name} is corrupt (SHA-256 mismatch)")
    try:
        arrays = load(blob)
    except Exception as e:  # safetensors raises its own error type
        raise CheckpointError(
            f"checkpoint {directory}: arrays file {name} is not valid safetensors ({e})"
        ) from e
    if set(arrays) != set(listing):
        raise CheckpointError(
            f"checkpoint {directory}: arrays file {name} does not hold the arrays {META} lists"
        )
    for k, (dt, shape) in listing.items():
        if arrays[k].dtype.str != dt or list(arrays[k].shape) != shape:
            raise CheckpointError(
                f"checkpoint {directory}: array {k!r} is {arrays[k].dtype}{arrays[k].shape}, "
                f"{META} says {dt}{tuple(shape)}"
            )
    return {k: np.array(v) for k, v in arrays.items()}, meta


def restore_arrays(
    target: dict[str, np.ndarray], arrays: dict[str, np.ndarray], prefix: str = "", what: str = "checkpoint"
) -> None:
    """Copy ``arrays[prefix + k]`` into each live ``target[k]`` in place, after checking that the names,
    shapes and dtypes match exactly (a checkpoint of another architecture is refused, nothing is copied).
    """
    have = {k[len(prefix) :] for k in arrays if k.startswith(prefix)}
    missing, extra = sorted(target.keys() - have), sorted(have - target.keys())
    if missing or extra:
        raise CheckpointError(
            f"{what} was written for another architecture: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for k, v in target.items():
        a = arrays[prefix + k]
        if a.shape != v.shape or a.dtype != v.dtype:
            raise CheckpointError(
                f"{what} was written for another architecture: {k!r} is {a.dtype.name}{a.shape}, "
                f"this model has {v.dtype.name}{v.shape}"
            )
    for k, v in target.items():
        v[...] = arrays[prefix + k]


def save_model(directory: str | os.PathLike, model, meta: dict[str, Any] | None = None) -> Path:
    """Save a SequenceModel: weights as ``model/<name>``, config as ``meta["config"]``."""
    arrays = {f"model/{k}": v for k, v in model.params.items()}
    return save_checkpoint(directory, arrays, {**(meta or {}), "config": model.config.to_dict()})


def load_model(directory: str | os.PathLike):
    """Rebuild the SequenceModel of a checkpoint (one from :func:`save_model` or a Trainer's).

    Returns (model, meta); the model is in eval mode.
    """
    from unrolled.models import ModelConfig, SequenceModel

    arrays, meta = load_checkpoint(directory)
    if "config" not in meta:
        raise CheckpointError(f"checkpoint {directory}: holds no model config")
    try:
        config = ModelConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {directory}: invalid model config ({e})") from e
    model = SequenceModel(config)
    restore_arrays(model.params, arrays, "model/", what=f"checkpoint {directory}")
    return model.eval(), meta
