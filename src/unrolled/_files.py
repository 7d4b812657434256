"""File primitives with POSIX care: atomic writes, our own temporaries, appends that never follow a
link, and input files that are really files.

Temporaries are named ``.unrolled-<pid>-<16 hex>.tmp``. Only a name of exactly that shape is ever
treated as ours, so a cleanup never touches a user's ``notes.tmp``; and a temporary is removed only
when the process named in it no longer runs, so two writers in one directory never delete each
other's file in flight (the pid is read on this host: a writer on another machine of a shared file
system, or in another pid namespace, may look dead — keep runs locked, see :mod:`unrolled.rundir`).

Inputs are opened with ``O_NONBLOCK`` and checked with ``fstat`` before any read, so ``/dev/zero``
(endless), a FIFO (blocks until a writer comes) or a directory is refused at once, in one line.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "check_regular_file",
    "fsync_dir",
    "is_own_temporary",
    "open_append",
    "open_regular_file",
    "read_text_file",
    "remove_own_temporaries",
    "temporary_name",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

_TEMPORARY = re.compile(r"\.unrolled-(\d+)-[0-9a-f]{16}\.tmp")
# New files get 0o666 minus the umask, like open(); tempfile.mkstemp would make every
# atomically written file 0o600, which a run's readers (another user, a web server) cannot read.
_FILE_MODE = 0o666


def temporary_name() -> str:
    """A fresh temporary name only this library uses: ``.unrolled-<pid>-<16 hex>.tmp``."""
    return f".unrolled-{os.getpid()}-{secrets.token_hex(8)}.tmp"


def is_own_temporary(name: str) -> bool:
    """Whether `name` (a file name, not a path) has the exact shape of :func:`temporary_name`."""
    return _TEMPORARY.fullmatch(name) is not None


def _pid_running(pid: int) -> bool:
    if pid <= 0:  # os.kill(0, ...) would address our own process group: such a name is no process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, under another user
        return True
    return True


def remove_own_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of dead writers directly inside `directory`; return what was deleted.

    Only names of the exact shape ``.unrolled-<pid>-<16 hex>.tmp`` whose pid is not a running process
    are removed (our own pid runs, so our own files in flight are kept); anything else is left alone.
    """
    directory = Path(directory)
    removed = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        m = _TEMPORARY.fullmatch(name)
        if m is None or _pid_running(int(m.group(1))):
            continue
        p = directory / name
        if p.is_symlink() or p.is_file():  # unlink removes a link itself, never its target
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def fsync_dir(path: str | os.PathLike) -> None:
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


def write_bytes_atomic(path: str | os.PathLike, data: bytes | Iterable[bytes]) -> Path:
    """Write `data` (bytes, or an iterable of bytes chunks, streamed so a large file is never held whole) to
    `path` so that a reader sees the old file or the new one, never a part.

    The bytes go to an own temporary beside `path`, are fsynced, then ``os.replace``-d onto `path`
    (which replaces a symbolic link at `path` itself, never its target) and the directory is fsynced.
    """
    path = Path(path)
    tmp = path.parent / temporary_name()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in (data,) if isinstance(data, bytes | bytearray | memoryview) else data:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """:func:`write_bytes_atomic` of `text` in UTF-8."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """:func:`write_bytes_atomic` of `obj` as indented JSON with a final newline (NaN refused)."""
    return write_text_atomic(path, json.dumps(obj, indent=1, allow_nan=False) + "\n")


def open_append(path: str | os.PathLike) -> IO[str]:
    """Open `path` for appending UTF-8 text, creating it; refuse a symbolic link or a non-regular file.

    ``O_NOFOLLOW`` makes the refusal race-free (a link swapped in after a check is still refused).
    With ``O_APPEND`` each ``write`` of a whole line lands at the end even if another handle appends.
    The file is line-buffered so each line reaches the file as one write.
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, _FILE_MODE)
    except OSError as e:  # ELOOP for a link, ENXIO for a FIFO without a reader: say which
        if path.is_symlink():
            raise ValueError(f"{path} is a symbolic link; refusing to write through it") from e
        if path.exists():
            _require_regular(os.stat(path), path, str(path))
        raise
    try:
        _require_regular(os.fstat(fd), path, str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "a", encoding="utf-8", buffering=1)
    except BaseException:
        os.close(fd)
        raise


_KINDS = [
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
]


def _require_regular(st: os.stat_result, path: Path, what: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _KINDS if test(st.st_mode)), "of an unknown type")
        prefix = f"{what}: {path}" if what != str(path) else str(path)
        raise ValueError(f"{prefix} is not a regular file ({kind})")


def check_regular_file(path: str | os.PathLike, what: str) -> Path:
    """Return `path` if it names a regular file (a symbolic link to one is fine), else raise ValueError.

    ``what`` names the input in the message, e.g. ``--text: /dev/zero is not a regular file (a character
    device)`` or ``--csv: data.csv: no such file``. Only ``stat`` is called: nothing is opened.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ValueError(f"{what}: {path}: no such file") from None
    except NotADirectoryError:
        raise ValueError(f"{what}: {path}: no such file (a parent is not a directory)") from None
    except PermissionError:
        raise ValueError(f"{what}: {path}: permission denied") from None
    _require_regular(st, path, what)
    return path


def open_regular_file(
    path: str | os.PathLike, what: str, *, encoding: str | None = None, errors: str | None = None
) -> IO:
    """Open `path` for reading only if it is a regular file; never blocks, never reads a device.

    `path` is checked with ``stat`` first (so a device is never even opened: opening some has side
    effects), then opened with ``O_NONBLOCK`` (a FIFO swapped in meanwhile cannot block the open) and
    checked again with ``fstat`` on the very file opened. Refusals are ValueErrors in one line, as in
    :func:`check_regular_file`.

    Returns
    -------
    A binary file object when `encoding` is None, else a text one with that encoding and `errors`.
    """
    path = check_regular_file(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ValueError(f"{what}: {path}: no such file") from None
    except PermissionError:
        raise ValueError(f"{what}: {path}: permission denied") from None
    try:
        _require_regular(os.fstat(fd), path, what)
        os.set_blocking(fd, True)
        if encoding is None:
            return os.fdopen(fd, "rb")
        return os.fdopen(fd, "r", encoding=encoding, errors=errors)
    except BaseException:
        os.close(fd)
        raise


def read_text_file(path: str | os.PathLike, what: str, *, encoding: str = "utf-8-sig") -> str:
    """The text of the regular file `path` (see :func:`open_regular_file`), decoded strictly.

    Bytes that do not decode are one ValueError naming `what`, the file and the byte offset (a leading
    UTF-8 byte-order mark is dropped by the default ``utf-8-sig``).
    """
    with open_regular_file(path, what) as f:
        data = f.read()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{what}: {path}: not UTF-8 text (byte 0x{data[e.start]:02x} at byte offset {e.start} cannot be "
            "decoded); convert it, e.g. `iconv -f latin1 -t utf-8`"
        ) from None
