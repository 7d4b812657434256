"""Checkpoints: arrays in safetensors, everything else in JSON beside them; atomic; sealed; never pickle.

A checkpoint is a directory::

    directory/
      meta.json                         the commit record: format, version, the arrays file's name,
                                        size and SHA-256, each array's dtype and shape, ``meta``
                                        (config, optimizer hyper-parameters, RNG states, step, …) and
                                        ``sha256``, the seal over all of that
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

Integrity: nothing in a checkpoint is trusted before it is verified, and nothing is allocated before
the sizes are known to be real.

- ``meta.json`` is sealed: ``sha256`` is the SHA-256 of ``json.dumps(record_without_sha256, indent=1)``
  and the file must be byte-identical to ``json.dumps(record, indent=1)``, the form it was written in.
  So a bit flip anywhere in it (one that breaks the JSON, changes a value, the seal, or only the
  spelling of an equal value such as ``1E5`` for ``1e5``) is refused; the seal in turn covers the
  arrays file's SHA-256, so a flip in the arrays is refused too. The seal detects accidents, not
  forgery: whoever can write the files can recompute it, which is why every field is also checked.
- Before the arrays file is read, the record is checked against its schema (types and ranges), the
  sizes its listing implies are checked against ``max_bytes`` and against the arrays file's real size
  and its safetensors header (read alone: 8 bytes and the header), and the arrays file is opened
  without following a symlink (``O_NOFOLLOW``, a plain regular file only, never a FIFO or device).
- No array holds NaN or ±inf: one would be a diverged model; saving or loading it names the tensor.
- :func:`load_model` checks the shapes the stored config implies against the stored arrays before it
  builds the model, so a 40 KB checkpoint whose config claims a huge vocabulary allocates nothing.

A quantised model (:func:`unrolled.quantize`) keeps its W_xh / W_hh as int8 (bf16: uint16) arrays with
float32 row scales beside them, ``meta["quantized"]`` naming the kind (:func:`save_model`); :func:`load_model`
checks them against the config like every other array.

Loading parses JSON and the safetensors header only — nothing in a checkpoint is ever executed — so a
truncated or corrupted file, a file that is not a checkpoint, or one of another architecture gives a
:class:`CheckpointError` (a ValueError) with one message, never another exception. Version 1
checkpoints (no seal) still load, with every other check.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import struct
import time
import typing
from pathlib import Path
from typing import Any

import numpy as np

from unrolled._files import fsync_dir, remove_own_temporaries, write_bytes_atomic

__all__ = [
    "MAX_ARRAYS_BYTES",
    "MAX_META_BYTES",
    "CheckpointError",
    "first_nonfinite",
    "is_checkpoint",
    "load_checkpoint",
    "load_model",
    "model_param_shapes",
    "restore_arrays",
    "save_checkpoint",
    "save_model",
    "write_atomic",
]

FORMAT = "unrolled-checkpoint"
VERSION = 2
META = "meta.json"
MAX_ARRAYS_BYTES = 64 << 30  # the default cap on an arrays file (and on what its listing implies)
MAX_META_BYTES = 256 << 20  # meta.json is read whole: a vocabulary fits, a disk image does not
_MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on its JSON header
_ARRAYS_NAME = re.compile(r"arrays-[0-9a-f]{16}\.safetensors")
_HEX64 = re.compile(r"[0-9a-f]{64}")
# Our temporaries, and only ours: ``.<target>.unrolled-<random>.tmp`` (cleanup never touches a user's .tmp).
# safetensors dtype names -> NumPy dtype strings (little-endian, as safetensors stores them).
_ST_DTYPES = {
    "BOOL": "|b1", "U8": "|u1", "I8": "|i1", "U16": "<u2", "I16": "<i2", "F16": "<f2", "U32": "<u4",
    "I32": "<i4", "F32": "<f4", "U64": "<u8", "I64": "<i8", "F64": "<f8",
}  # fmt: skip
_RECORD_KEYS = {
    1: ("format", "version", "arrays_file", "arrays_bytes", "arrays_sha256", "arrays", "meta"),
    2: ("format", "version", "arrays_file", "arrays_bytes", "arrays_sha256", "arrays", "meta", "sha256"),
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, not a checkpoint, corrupt, truncated, or incompatible."""


def write_atomic(path: str | os.PathLike, data: bytes | Any) -> None:
    """Replace the file `path` by `data` atomically: a reader (or a crash) sees the old file or the new one.

    Parameters
    ----------
    path : the file to replace (its directory must exist).
    data : bytes, or an iterable of bytes chunks (streamed: a large file is never held whole).

    The data go to an own temporary beside `path` (``.unrolled-<pid>-<hex>.tmp``, a name only this library
    uses, so cleanup can never match a user's file), are fsynced, then ``os.replace``-d onto `path`; on any
    failure (an exception, a signal's KeyboardInterrupt) the temporary is removed.
    """
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


def first_nonfinite(arrays: dict[str, np.ndarray]) -> str | None:
    """``"'name' has k non-finite values (nan)"`` for the first floating array holding NaN/±inf, or None.

    One sum per array is the cheap test (a NaN or inf anywhere makes the sum non-finite); only when the
    sum is not finite — or merely overflowed — are the elements counted.
    """
    for k, a in arrays.items():
        if a.dtype.kind not in "fc" or not a.size:
            continue
        with np.errstate(over="ignore", invalid="ignore"):
            total = a.sum(dtype=np.float64)
        if np.isfinite(total):
            continue
        bad = ~np.isfinite(a)
        if bad.any():
            kinds = "nan" if np.isnan(a).any() else "inf"
            return f"{k!r} has {int(bad.sum())} non-finite values ({kinds})"
    return None


def _record_text(record: dict[str, Any]) -> str:
    """The one serialisation of a record: what is hashed, written, and compared byte for byte on load."""
    return json.dumps(record, indent=1)


def _seal(body: dict[str, Any]) -> dict[str, Any]:
    """The record with its ``sha256``: the SHA-256 of the body's serialisation."""
    return {**body, "sha256": hashlib.sha256(_record_text(body).encode()).hexdigest()}


def save_checkpoint(
    directory: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict[str, Any]
) -> Path:
    """Write a checkpoint atomically (see the module docstring); replaces any checkpoint there.

    Parameters
    ----------
    directory : the checkpoint directory (created with its parents if needed).
    arrays : name -> ndarray (any shape; numeric or bool dtypes safetensors supports; floating arrays
        must be finite).
    meta : JSON-able dict (config, optimizer state without arrays, RNG states, step, …).

    Returns
    -------
    The directory as a Path.

    Raises
    ------
    TypeError : arrays not a dict of str -> ndarray, or meta not JSON-able.
    CheckpointError : an array holds NaN or ±inf (the message names it); nothing is written.
    """
    from safetensors.numpy import save

    directory = Path(directory)
    if not isinstance(arrays, dict) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in arrays.items()
    ):
        raise TypeError("arrays: expected a dict name -> numpy.ndarray")
    if not isinstance(meta, dict):
        raise TypeError(f"meta: expected a JSON-able dict, got {type(meta).__name__}")
    try:
        meta_json = json.dumps(meta)
    except (TypeError, ValueError) as e:
        raise TypeError(f"meta: expected a JSON-able dict, got {e}") from e
    bad = first_nonfinite(arrays)
    if bad is not None:
        raise CheckpointError(f"checkpoint {directory}: not saved, array {bad}")
    directory.mkdir(parents=True, exist_ok=True)
    blob = save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
    digest = hashlib.sha256(blob).hexdigest()
    name = f"arrays-{digest[:16]}.safetensors"
    write_atomic(directory / name, blob)
    record = _seal(
        {
            "format": FORMAT,
            "version": VERSION,
            "arrays_file": name,
            "arrays_bytes": len(blob),
            "arrays_sha256": digest,
            "arrays": {k: [v.dtype.str, list(v.shape)] for k, v in arrays.items()},
            "meta": json.loads(meta_json),
        }
    )
    previous = _named_arrays_file(directory)  # read before the commit replaces it
    write_atomic(directory / META, _record_text(record).encode())  # the commit point
    fsync_dir(directory)
    _remove_superseded(directory, keep=name, previous=previous)
    return directory


def is_checkpoint(directory: str | os.PathLike) -> bool:
    """True when `directory` holds a meta.json (whether or not it is valid)."""
    return (Path(directory) / META).is_file()


# ----------------------------------------------------------------- reading, nothing trusted
def _open_regular(directory: Path, name: str, dir_fd: int | None) -> tuple[int, int]:
    """Open ``directory/name`` for reading without following a symlink; (fd, size) of a regular file.

    O_NONBLOCK: opening a FIFO planted in place of the file must not hang the reader.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    where = f"checkpoint {directory}: {name}"
    if not getattr(os, "O_NOFOLLOW", 0) and (directory / name).is_symlink():  # pragma: no cover
        raise CheckpointError(f"{where} is a symlink (expected a regular file)")
    try:
        fd = os.open(name if dir_fd is not None else directory / name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise CheckpointError(f"{where} is missing") from None
    except OSError as e:  # ELOOP: a symlink; EACCES; …
        if (directory / name).is_symlink():
            raise CheckpointError(f"{where} is a symlink (expected a regular file)") from None
        raise CheckpointError(f"{where} cannot be opened ({e})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise CheckpointError(f"{where}: expected a regular file, got another kind of file")
    return fd, st.st_size


def _read_exact(fd: int, n: int, offset: int) -> bytearray:
    """n bytes at `offset`, or fewer if the file ends (a file shrunk under us)."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        if hasattr(os, "preadv"):
            k = os.preadv(fd, [view[got:]], offset + got)
        else:  # pragma: no cover
            k = _pread_into(fd, view[got:], offset + got)
        if k == 0:
            return buf[:got]
        got += k
    return buf


def _pread_into(fd: int, view: memoryview, offset: int) -> int:  # pragma: no cover - no preadv
    os.lseek(fd, offset, os.SEEK_SET)
    data = os.read(fd, len(view))
    view[: len(data)] = data
    return len(data)


def _expect(cond: bool, where: str, what: str, got: Any) -> None:
    if not cond:
        shown = repr(got)
        raise CheckpointError(f"{where}: expected {what}, got {shown[:80]}{'…' if len(shown) > 80 else ''}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_record(record: Any, where: str, max_bytes: int) -> None:
    """Schema of the commit record: every field's type and range, and the listing within the file size."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not an unrolled checkpoint ({META} lacks format {FORMAT!r})")
    version = record.get("version")
    if not _is_int(version) or version not in _RECORD_KEYS:
        raise CheckpointError(
            f"{where}: format version {version!r}, this unrolled reads {sorted(_RECORD_KEYS)}"
        )
    keys = _RECORD_KEYS[version]
    _expect(set(record) == set(keys), f"{where}: {META}", f"the entries {list(keys)}", sorted(record))
    w = f"{where}: {META} "
    name, size, digest = record["arrays_file"], record["arrays_bytes"], record["arrays_sha256"]
    name_ok = isinstance(name, str) and _ARRAYS_NAME.fullmatch(name) is not None
    _expect(name_ok, w + "arrays_file", "'arrays-<16 hex digits>.safetensors'", name)
    _expect(_is_int(size) and 8 <= size <= max_bytes, w + "arrays_bytes", f"8..{max_bytes} (max_bytes)", size)
    digest_ok = isinstance(digest, str) and _HEX64.fullmatch(digest) is not None
    _expect(digest_ok, w + "arrays_sha256", "64 lowercase hex digits", digest)
    _expect(name[7:23] == digest[:16], w + "arrays_file", f"the name of its SHA-256 {digest[:16]}", name)
    _expect(isinstance(record["meta"], dict), w + "meta", "a dict", type(record["meta"]).__name__)
    listing = record["arrays"]
    _expect(isinstance(listing, dict), w + "arrays", "a dict name -> [dtype, shape]", type(listing).__name__)
    total = 0
    for k, entry in listing.items():
        ok = isinstance(entry, list) and len(entry) == 2 and entry[0] in _ST_DTYPES.values()
        ok = ok and isinstance(entry[1], list) and all(_is_int(d) and d >= 0 for d in entry[1])
        _expect(ok, w + f"arrays[{k!r}]", "[dtype, shape]: a dtype safetensors stores, sizes >= 0", entry)
        total += math.prod(entry[1]) * np.dtype(entry[0]).itemsize
        _expect(total <= size, w + f"arrays[{k!r}]", f"arrays within the arrays file ({size} bytes)", entry)


def _parse_header(fd: int, size: int, where: str) -> dict[str, tuple[str, tuple[int, ...], int, int]]:
    """The safetensors header alone: name -> (dtype str, shape, begin, end) in the file, every
    tensor checked to lie inside the file, contiguous and sized by its dtype and shape."""
    head = _read_exact(fd, 8, 0)
    _expect(len(head) == 8, where, "a safetensors file", f"{len(head)} bytes")
    (n,) = struct.unpack("<Q", head)
    _expect(
        2 <= n <= min(size - 8, _MAX_HEADER_BYTES), where, f"a safetensors header of 2..{size - 8} bytes", n
    )
    try:
        header = json.loads(bytes(_read_exact(fd, n, 8)))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{where}: expected a safetensors header, got invalid JSON ({e})") from None
    _expect(isinstance(header, dict), where, "a safetensors header (a dict)", type(header).__name__)
    tensors, start = {}, 8 + n
    for k, info in header.items():
        if k == "__metadata__":
            continue
        ok = isinstance(info, dict) and info.get("dtype") in _ST_DTYPES
        ok = ok and isinstance(info.get("shape"), list) and all(_is_int(d) and d >= 0 for d in info["shape"])
        off = info.get("data_offsets") if ok else None
        ok = ok and isinstance(off, list) and len(off) == 2 and all(_is_int(o) for o in off)
        ok = ok and 0 <= off[0] <= off[1] <= size - start
        ok = ok and off[1] - off[0] == math.prod(info["shape"]) * np.dtype(_ST_DTYPES[info["dtype"]]).itemsize
        _expect(ok, f"{where}: tensor {k!r}", "dtype, shape and data_offsets inside the file", info)
        tensors[k] = (_ST_DTYPES[info["dtype"]], tuple(info["shape"]), start + off[0], start + off[1])
    end = start  # the tensors must tile the data: no gap, no overlap, no trailing bytes
    for b, e in sorted((b, e) for _, _, b, e in tensors.values()):
        _expect(b == end, where, f"tensors tiling the data (one at byte {end})", f"one at byte {b}")
        end = e
    _expect(end == size, where, f"tensors ending at the end of the file ({size} bytes)", f"{end} bytes")
    return tensors


def load_checkpoint(
    directory: str | os.PathLike, *, max_bytes: int = MAX_ARRAYS_BYTES
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify a checkpoint written by :func:`save_checkpoint` (see the module docstring).

    Parameters
    ----------
    directory : the checkpoint directory.
    max_bytes : refuse an arrays file (or a listing implying one) larger than this, before reading it.

    Returns
    -------
    arrays : name -> ndarray (writable copies), meta : the dict given to save_checkpoint.

    Raises
    ------
    CheckpointError : missing, not a checkpoint, truncated or corrupted (seal / size / SHA-256 / header
        mismatch), a field of the wrong type or range, an array with NaN or ±inf, or written by an
        incompatible version. Nothing else: never a KeyError, MemoryError or safetensors error.
    """
    directory = Path(directory)
    where = f"checkpoint {directory}"
    if not directory.exists():
        raise CheckpointError(f"{where}: no such directory")
    if not directory.is_dir():
        raise CheckpointError(f"{where}: not a checkpoint (expected a directory with {META})")
    if not (directory / META).exists() and not (directory / META).is_symlink():
        raise CheckpointError(f"{where}: not a checkpoint (no {META})")
    # Both files are opened relative to one handle on the directory: a rename of the directory
    # between the two opens cannot pair one checkpoint's meta.json with another's arrays.
    dir_fd = None
    if os.open in os.supports_dir_fd:
        try:
            dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as e:
            raise CheckpointError(f"{where}: cannot be opened ({e})") from None
    try:
        return _load(directory, where, dir_fd, max_bytes)
    finally:
        if dir_fd is not None:
            os.close(dir_fd)


def _load(directory: Path, where: str, dir_fd: int | None, max_bytes: int):
    fd, size = _open_regular(directory, META, dir_fd)
    try:
        if size > MAX_META_BYTES:
            raise CheckpointError(f"{where}: {META} is {size} bytes, more than {MAX_META_BYTES} (not ours)")
        raw = bytes(_read_exact(fd, size, 0))
    finally:
        os.close(fd)
    try:
        record = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{where}: {META} is corrupt or not JSON ({str(e)[:80]})") from None
    _check_record(record, where, max_bytes)
    if record["version"] >= 2:
        body = {k: v for k, v in record.items() if k != "sha256"}
        if hashlib.sha256(_record_text(body).encode()).hexdigest() != record["sha256"]:
            raise CheckpointError(f"{where}: {META} is corrupt (SHA-256 seal mismatch)")
    if _record_text(record).encode() != raw:
        raise CheckpointError(f"{where}: {META} is corrupt (not byte-identical to the form unrolled writes)")
    name, size, digest = record["arrays_file"], record["arrays_bytes"], record["arrays_sha256"]
    listing = record["arrays"]
    fd, real = _open_regular(directory, name, dir_fd)
    try:
        if real != size:
            raise CheckpointError(
                f"{where}: arrays file {name} is truncated or corrupt ({real} bytes, expected {size})"
            )
        tensors = _parse_header(fd, size, f"{where}: arrays file {name}")
        for k in set(tensors) | set(listing):
            if k not in tensors or k not in listing:
                raise CheckpointError(f"{where}: arrays file {name} does not hold the arrays {META} lists")
            dt, shape = listing[k]
            if tensors[k][:2] != (dt, tuple(shape)):
                raise CheckpointError(
                    f"{where}: array {k!r} is {np.dtype(tensors[k][0])}{tensors[k][1]}, "
                    f"{META} says {np.dtype(dt)}{tuple(shape)}"
                )
        blob = _read_exact(fd, size, 0)
    finally:
        os.close(fd)
    if len(blob) != size or hashlib.sha256(blob).hexdigest() != digest:
        raise CheckpointError(f"{where}: arrays file {name} is corrupt (SHA-256 mismatch)")
    arrays = {
        k: np.frombuffer(blob, dtype=dt, count=math.prod(shape), offset=b).reshape(shape).copy()
        for k, (dt, shape, b, _) in tensors.items()
    }
    bad = first_nonfinite(arrays)
    if bad is not None:
        raise CheckpointError(f"{where}: array {bad} (a diverged model is not loaded)")
    return arrays, record["meta"]


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
    """Save a SequenceModel: weights as ``model/<name>``, config as ``meta["config"]``.

    A quantised model (:func:`unrolled.quantize`) stores its W_xh / W_hh small: ``model/rnn.W_xh_l0``
    int8 (or bf16 bits as uint16) of the float shape, ``scale/rnn.W_xh_l0`` its float32 row scales (int8
    only), and ``meta["quantized"]`` the kind; a float model's checkpoint is unchanged."""
    arrays = {f"model/{k}": v for k, v in model.params.items()}
    meta = {k: v for k, v in (meta or {}).items() if k != _QUANTIZED}
    q = getattr(getattr(model, "rnn", None), "quantized", None)
    if q is not None:
        meta[_QUANTIZED] = q.kind
        for k, small in q.stored.items():
            arrays[f"model/rnn.{k}"] = small
            if q.kind == "int8":
                arrays[f"scale/rnn.{k}"] = q.scales[k]
    return save_checkpoint(directory, arrays, {**meta, "config": model.config.to_dict()})


_QUANTIZED = "quantized"  # meta key of a quantised model's kind


def _quantized_weights(arrays: dict[str, np.ndarray], meta: dict[str, Any], implied: dict, where: str):
    """A quantised checkpoint's small weights, checked against its schema: None for a float checkpoint,
    else a QuantizedWeights of the W_xh / W_hh entries (popped from `arrays`, with their scales)."""
    from unrolled.kernels.quantized import KINDS, STORED_DTYPES, QuantizedWeights

    if _QUANTIZED not in meta:
        stray = sorted(k for k in arrays if k.startswith("scale/"))
        _expect(not stray, f"{where}: arrays", "no row scales in a float checkpoint", stray[:3])
        return None
    kind = meta[_QUANTIZED]
    _expect(kind in KINDS, f"{where}: meta {_QUANTIZED}", " or ".join(map(repr, KINDS)), kind)
    keys = [k for k in implied if k.startswith(("rnn.W_xh", "rnn.W_hh"))]
    want_scales = {f"scale/{k}" for k in keys} if kind == "int8" else set()
    got_scales = {k for k in arrays if k.startswith("scale/")}
    _expect(
        got_scales == want_scales, f"{where}: row scales", sorted(want_scales)[:3], sorted(got_scales)[:3]
    )
    stored, scales = {}, {}
    for k in keys:
        q = arrays.pop(f"model/{k}", None)
        dt = STORED_DTYPES[kind]
        ok = q is not None and q.dtype == dt and q.shape == implied[k]
        _expect(
            ok,
            f"{where}: array {k!r}",
            f"{dt.name}{implied[k]} ({kind})",
            None if q is None else f"{q.dtype.name}{q.shape}",
        )
        s = arrays.pop(f"scale/{k}") if kind == "int8" else np.ones(q.shape[0], np.float32)
        ok = s.dtype == np.float32 and s.shape == q.shape[:1] and bool((s > 0).all())
        _expect(
            ok, f"{where}: row scales of {k!r}", f"positive float32{q.shape[:1]}", f"{s.dtype.name}{s.shape}"
        )
        stored[k[len("rnn.") :]], scales[k[len("rnn.") :]] = q, s
    try:
        return QuantizedWeights(kind, stored, scales)
    except ValueError as e:
        raise CheckpointError(f"{where}: invalid quantised weights ({e})") from None


def _check_field_types(conf: dict[str, Any], cls: type, where: str) -> None:
    """Each known field of the dataclass `cls` has a JSON value of its annotated type (``int | None``,
    ``float``, ``bool``, ``str``): the dataclass itself may take a truthy string for a flag, or keep a
    field it does not use (``input_size`` of a token model) whatever its type."""
    hints = typing.get_type_hints(cls)
    for k, v in conf.items():
        if k not in hints:
            continue  # unknown fields: from_dict names them
        allowed = typing.get_args(hints[k]) or (hints[k],)
        ok = any(
            (t is type(None) and v is None)
            or (t is bool and isinstance(v, bool))
            or (t is int and isinstance(v, int) and not isinstance(v, bool))
            or (t is float and isinstance(v, int | float) and not isinstance(v, bool))
            or (t is str and isinstance(v, str))
            for t in allowed
        )
        names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
        _expect(ok, f"{where} {k}", names, v)


def model_param_shapes(config) -> dict[str, tuple[int, ...]]:
    """The shapes of a :class:`~unrolled.models.SequenceModel`'s parameters for `config`, computed
    without allocating them (so a checkpoint's config can be checked against its arrays first).

    Returns
    -------
    name -> shape, the same names as ``SequenceModel(config).params``.
    """
    c = config
    G = {"lstm": 4, "gru": 3, "rnn": 1, "mingru": 2, "minlstm": 3}[c.cell]
    D = 2 if c.bidirectional else 1
    H = c.hidden_size
    P = getattr(c, "proj_size", 0) or H  # the width of h: an LSTM's projection, else H
    shapes: dict[str, tuple[int, ...]] = {}
    if c.input == "tokens":
        shapes["embed.W"] = (c.vocab_size, c.embed_dim)  # (V, E)
    for layer in range(c.num_layers):
        I = (c.embed_dim if c.input == "tokens" else c.input_size) if layer == 0 else D * P
        for d in range(D):
            s = f"_l{layer}" + ("_reverse" if d else "")
            shapes[f"rnn.W_xh{s}"] = (G * H, I)
            if c.cell not in ("mingru", "minlstm"):  # their gates never see h_{t−1}
                shapes[f"rnn.W_hh{s}"] = (G * H, P)
            shapes[f"rnn.b_h{s}"] = (G * H,)
            if c.cell == "gru" and c.reset_after:
                shapes[f"rnn.b_hn{s}"] = (H,)
            # The variants (unrolled.cells.lstm_variant / gru_variant), in the order the layer makes them.
            if getattr(c, "peephole", False):
                shapes.update({f"rnn.p_{g}{s}": (H,) for g in "ifo"})
            if P != H:
                shapes[f"rnn.W_hr{s}"] = (P, H)
            if getattr(c, "layer_norm", False):
                for part in ("x", "h"):
                    shapes.update({f"rnn.ln_{part}_{v}{s}": (G * H,) for v in "gb"})
                if c.cell == "lstm":
                    shapes.update({f"rnn.ln_c_{v}{s}": (H,) for v in "gb"})
    shapes["head.W"] = (c.output_size, D * P)  # (K, D·P)
    shapes["head.b"] = (c.output_size,)
    return shapes


def load_model(directory: str | os.PathLike, *, max_bytes: int = MAX_ARRAYS_BYTES):
    """Rebuild the SequenceModel of a checkpoint (one from :func:`save_model` or a Trainer's).

    The stored config is checked (types, ranges) and the shapes it implies are compared with the
    stored arrays before the model is built: nothing larger than the checkpoint itself is allocated.

    Returns (model, meta); the model is in eval mode. Raises :class:`CheckpointError` only.
    """
    from unrolled.models import ModelConfig, SequenceModel

    where = f"checkpoint {directory}"
    arrays, meta = load_checkpoint(directory, max_bytes=max_bytes)
    if "config" not in meta:
        raise CheckpointError(f"{where}: holds no model config")
    conf = meta["config"]
    if isinstance(conf, dict):
        _check_field_types(conf, ModelConfig, f"{where}: config")
    try:
        config = ModelConfig.from_dict(conf)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: invalid model config ({e})") from None
    implied = model_param_shapes(config)
    quantized = _quantized_weights(arrays, meta, implied, where)
    stored = {k[len("model/") :]: a.shape for k, a in arrays.items() if k.startswith("model/")}
    if quantized is not None:  # the small weights were checked against the implied shapes
        stored.update({f"rnn.{k}": q.shape for k, q in quantized.stored.items()})
    if stored != implied:
        diff = sorted(k for k in stored.keys() | implied.keys() if stored.get(k) != implied.get(k))
        k = diff[0]
        raise CheckpointError(
            f"{where}: its config implies {k!r} of shape {implied.get(k)}, the arrays hold {stored.get(k)}"
        )
    model = SequenceModel(config)
    if quantized is None:
        restore_arrays(model.params, arrays, "model/", what=where)
    else:
        from unrolled.quantization import attach

        if model.rnn.dtype != np.float32:
            raise CheckpointError(
                f"{where}: a quantised model must be float32, its config says {config.dtype}"
            )
        small = {f"rnn.{k}" for k in quantized.stored}
        restore_arrays(
            {k: v for k, v in model.params.items() if k not in small}, arrays, "model/", what=where
        )
        attach(model.rnn, quantized)
    return model.eval(), meta
