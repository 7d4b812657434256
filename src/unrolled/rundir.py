"""Run directories that nothing can clobber: the one policy every command that writes a run follows.

A run directory holds only what this library wrote::

    DIR/
      run.json        the marker: {"format": "unrolled-run", "version": 1, "kind": "charlm"}
      run.lock        the advisory lock (flock) of the process writing the run; holds its pid
      last/ best/     checkpoints (unrolled.checkpoint)
      metrics.jsonl summary.json meta.json arrays-<hex>.safetensors heldout.tsv training/ train/

:func:`open_run` decides, under the lock, what may happen to ``DIR``:

=====================  ==========================  ===========================  =========================
``DIR`` holds           a new run                   ``resume``                   ``overwrite``
=====================  ==========================  ===========================  =========================
nothing / no DIR        created                     refused: no run              created
a run of this kind      refused                     continued                    ours removed, created
a run of another kind   refused, naming both        refused, naming both         ours removed, created
a run + a user's file   refused                     continued, file untouched    refused, naming the file
anything else           refused: not a run          refused: not a run           refused: not a run
=====================  ==========================  ===========================  =========================

A run is recognised by its marker or, for runs written before the marker existed, by an unrolled
checkpoint (a ``meta.json`` of format ``unrolled-checkpoint``) at its top, in ``last/``/``best/``, or
in ``training/``/``train/``; its kind is then read from the checkpoint's ``meta["app"]`` ("demo" when
``meta["demo"]``). A ``metrics.jsonl`` alone proves nothing (a user may have one), so such a folder
is "not a run" and is never overwritten. Symbolic links are never followed: a run whose own names
(``best``, ``metrics.jsonl``…) are links is refused in every mode, and :meth:`RunDir.path` refuses a
path through a link, so a link's target is never written, truncated or removed.

The lock is ``flock(LOCK_EX | LOCK_NB)`` on ``run.lock``, held from :func:`open_run` until
:meth:`RunDir.close` (or the end of the ``with`` block); the kernel drops it when the process dies,
even by SIGKILL, so a crashed run never needs cleaning up. A second writer is refused at once, naming
the holder's pid. The lock file is kept (deleting it would let a late opener lock a removed inode
while a third process locks a new one). flock is advisory and local: processes on two machines of
an NFS mount may both get it on old kernels, and a child forked while the run is open shares it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
from pathlib import Path
from typing import IO, Any

from unrolled._files import (
    is_own_temporary,
    open_append,
    remove_own_temporaries,
    write_json_atomic,
    write_text_atomic,
)

__all__ = ["LIBRARY_NAMES", "RunDir", "RunDirError", "open_run", "run_kind"]

FORMAT = "unrolled-run"
VERSION = 1
MARKER = "run.json"
LOCK = "run.lock"
# Every name this library writes inside a run (top level and inside its sub-directories). Only these
# are ever removed by ``overwrite``; anything else is a user's and makes ``overwrite`` refuse.
LIBRARY_NAMES = frozenset(
    {
        MARKER,
        LOCK,
        "last",
        "best",
        "training",
        "train",
        "meta.json",
        "metrics.jsonl",
        "summary.json",
        "heldout.tsv",
    }
)
_CHECKPOINT_HOMES = ("", "last", "best", "training", "training/last", "train", "train/last", "train/best")
_ARRAYS_NAME = re.compile(r"arrays-[0-9a-f]{16}\.safetensors")
_KIND = re.compile(r"[a-z][a-z0-9_-]*")


class RunDirError(ValueError):
    """A run directory that cannot be used as asked: one line saying why and what to do instead."""


def _is_library_name(name: str) -> bool:
    return name in LIBRARY_NAMES or is_own_temporary(name) or _ARRAYS_NAME.fullmatch(name) is not None


def _read_json(path: Path) -> Any:
    """The JSON in `path` if it is a regular file (not a link) holding JSON, else None."""
    try:
        if path.is_symlink() or not path.is_file():
            return None
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


class _Contents:
    """What a directory holds, as far as the policy cares."""

    def __init__(self, root: Path):
        self.foreign: list[str] = []  # paths (relative) of what the library never writes
        self.links: list[str] = []  # our names that are symbolic links
        self.ours: list[str] = []  # top-level entries the library wrote (the lock excepted)
        self._walk(root, root)
        marker = _read_json(root / MARKER)
        self.marked = isinstance(marker, dict) and marker.get("format") == FORMAT
        if MARKER in self.ours and not self.marked:  # a run.json of another tool is the user's
            self.foreign.append(MARKER)
            self.ours.remove(MARKER)
        kind = marker.get("kind") if self.marked else None
        self.kind: str | None = kind if isinstance(kind, str) else None
        self.legacy = not self.marked and self._legacy_kind(root)
        self.is_run = self.marked or self.legacy

    def _walk(self, root: Path, directory: Path) -> None:
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            rel = os.path.relpath(entry.path, root)
            if not _is_library_name(entry.name):
                self.foreign.append(rel)
            elif entry.is_symlink():
                self.links.append(rel)
            else:
                if directory == root and entry.name != LOCK and not is_own_temporary(entry.name):
                    self.ours.append(entry.name)
                if entry.is_dir(follow_symlinks=False):
                    self._walk(root, Path(entry.path))

    def _legacy_kind(self, root: Path) -> bool:
        """Whether an unrolled checkpoint sits where runs keep one; sets ``kind`` when it says."""
        found = False
        for home in _CHECKPOINT_HOMES:
            if any(rel in self.links for rel in _prefixes(home)):
                continue  # never read through a link
            record = _read_json(root / home / "meta.json")
            if isinstance(record, dict) and record.get("format") == "unrolled-checkpoint":
                found = True
                meta = record.get("meta")
                if self.kind is None and isinstance(meta, dict) and isinstance(meta.get("app"), str):
                    self.kind = "demo" if meta.get("demo") else meta["app"]
        return found

    @property
    def empty(self) -> bool:
        return not self.foreign and not self.links and not self.ours


def _prefixes(rel: str) -> list[str]:
    parts = Path(rel).parts
    return [str(Path(*parts[: i + 1])) for i in range(len(parts))]


def _listing(names: list[str], n: int = 3) -> str:
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


class RunDir:
    """An open run directory: the lock is held until :meth:`close`; paths inside never follow links.

    Get one from :func:`open_run`, preferably as ``with open_run(...) as run:``.

    Attributes
    ----------
    root : the run directory (absolute, resolved once at open).
    kind : the kind of run ("charlm", "classify", …).
    resumed : True when an existing run is being continued.
    """

    def __init__(self, root: Path, kind: str, resumed: bool, lock_fd: int):
        self.root, self.kind, self.resumed = root, kind, resumed
        self._lock_fd: int | None = lock_fd

    # ------------------------------------------------------------------ paths and writing
    def path(self, *parts: str) -> Path:
        """The path of ``parts`` inside the run, e.g. ``run.path("best")``; it need not exist yet.

        Raises RunDirError when a part is absolute or ``..``, or when the path or a directory on the
        way exists as a symbolic link (writing there would write its target, outside the run).
        """
        p = self.root
        for part in parts:
            for piece in Path(part).parts:
                if piece in ("", ".", "..") or os.path.isabs(piece):
                    raise RunDirError(
                        f"run path: expected a name inside {self.root}, got {os.path.join(*parts)!r}"
                    )
                p = p / piece
                if p.is_symlink():
                    raise RunDirError(
                        f"{p}: is a symbolic link (to {os.readlink(p)}); a run never writes through "
                        "a link — remove it"
                    )
        if not p.resolve().is_relative_to(self.root):  # pragma: no cover - the checks above imply it
            raise RunDirError(f"{p}: resolves outside the run directory {self.root}")
        return p

    def write_text(self, name: str, text: str) -> Path:
        """Write ``text`` (UTF-8) to ``name`` inside the run atomically (the old file or the new)."""
        return write_text_atomic(self.path(name), text)

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as indented JSON to ``name`` inside the run atomically."""
        return write_json_atomic(self.path(name), obj)

    def open_append(self, name: str) -> IO[str]:
        """Open ``name`` inside the run for appending lines (e.g. ``metrics.jsonl``): line-buffered,
        ``O_APPEND``, and ``O_NOFOLLOW`` so a link swapped in after :meth:`path` is still refused."""
        return open_append(self.path(name))

    def append_line(self, name: str, line: str) -> None:
        """Append one line (a newline is added) to ``name`` inside the run in a single write."""
        if "\n" in line:
            raise ValueError(f"line: expected a single line, got one with a newline: {line[:40]!r}")
        with self.open_append(name) as f:
            f.write(line + "\n")

    def remove_temporaries(self) -> list[Path]:
        """Delete the temporaries of dead writers anywhere in the run (only our own name shape)."""
        removed = []
        for directory, dirs, _ in os.walk(self.root):  # os.walk does not follow links by default
            dirs[:] = [d for d in dirs if _is_library_name(d)]
            removed += remove_own_temporaries(directory)
        return removed

    def has_checkpoint(self) -> bool:
        """Whether an unrolled checkpoint sits where runs keep one (``last/``, ``training/last``, …)."""
        homes = [self.root / home for home in _CHECKPOINT_HOMES]
        return any(not h.is_symlink() and _read_json(h / "meta.json") is not None for h in homes)

    def discard(self) -> list[str]:
        """Remove what the library wrote at the top of this run (a user's file is never touched; links
        are never followed) and return the names removed; the lock stays held until :meth:`close`.

        For a new run that failed before its first checkpoint (a bad input found while reading it): the
        folder is then as it was, so the same command can be run again without ``--overwrite``."""
        if not self.locked:
            raise RunDirError(f"{self.root}: the run is closed; only an open run can be discarded")
        ours = _Contents(self.root).ours
        _remove_ours(self.root, ours)
        return ours

    # ------------------------------------------------------------------ the lock
    @property
    def locked(self) -> bool:
        return self._lock_fd is not None

    def close(self) -> None:
        """Release the lock (idempotent). The pid is erased first, so no one is named as holder."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "locked" if self.locked else "closed"
        return f"RunDir({str(self.root)!r}, kind={self.kind!r}, resumed={self.resumed}, {state})"


def run_kind(path: str | os.PathLike) -> str | None:
    """The kind of the run in `path` as :func:`open_run` sees it (its marker, or for an older run its
    checkpoint's app); None when `path` holds no run, or a run of unknown kind. Reads only; no lock."""
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return None
    c = _Contents(path)
    return c.kind if c.is_run else None


def _lock(root: Path, what: str) -> int:
    """Take the run's flock without waiting and write our pid into the lock file; return its fd."""
    path = root / LOCK
    try:
        # No O_TRUNC: the file may be locked by another process whose pid we are about to report.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as e:
        if path.is_symlink():
            raise RunDirError(f"{what} {root}: {LOCK} is a symbolic link; remove it") from e
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        try:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        who = f"pid {holder}" if holder.isdigit() else "a process that has not yet written its pid"
        raise RunDirError(
            f"{what} {root}: in use by another unrolled process ({who}); wait for it to end or "
            f"choose another {what}"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _remove_ours(root: Path, names: list[str]) -> None:
    """Remove the library's top-level entries of a run (never links: the caller refused those)."""
    # The marker goes first: a crash half-way leaves an unmarked run, still recognised by its
    # checkpoints (so still protected) and still ours to overwrite again.
    for name in sorted(names, key=lambda n: n != MARKER):
        p = root / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)  # does not follow links inside (and the caller found none among ours)
        else:
            p.unlink(missing_ok=True)


def open_run(
    path: str | os.PathLike, kind: str, *, resume: bool, overwrite: bool, what: str = "--out"
) -> RunDir:
    """Open a run directory for writing under the policy of the module docstring; hold its lock.

    Parameters
    ----------
    path : the run directory; missing parents are created (not with ``resume``).
    kind : what writes the run, e.g. "charlm", "demo", "classify", "forecast", "translate" (for runs
        written before the marker, the checkpoint's ``meta["app"]``).
    resume : continue the run of the same kind in `path`.
    overwrite : replace the run in `path` (of any kind), removing only what the library wrote; refused
        when the directory also holds a user's file.
    what : how messages name the directory (the command-line option).

    Returns
    -------
    A locked :class:`RunDir`; use it as a context manager so the lock is released on every exit.

    Raises
    ------
    RunDirError (a ValueError) : the directory may not be used as asked, or another process holds it.
    TypeError / ValueError : invalid `kind`, `resume` or `overwrite`.
    """
    if not isinstance(kind, str) or _KIND.fullmatch(kind) is None:
        raise ValueError(f"kind: expected a lower-case name such as 'charlm', got {kind!r}")
    for name, v in (("resume", resume), ("overwrite", overwrite)):
        if not isinstance(v, bool):
            raise TypeError(f"{name}: expected True or False, got {v!r}")
    if resume and overwrite:
        raise ValueError("resume / overwrite: expected at most one of them, got both")
    given = Path(path)
    if given.exists() and not given.is_dir():
        raise RunDirError(f"{what} {given}: exists and is not a directory")
    if not given.exists():
        if resume:
            raise RunDirError(f"{what} {given}: holds no run to continue (no such directory)")
        given.mkdir(parents=True, exist_ok=True)
    root = given.resolve()
    # A first look without the lock, so that refusing a user's folder never leaves a run.lock in it.
    _refuse_not_a_run(_Contents(root), given, resume, what)
    fd = _lock(root, what)
    try:
        run = RunDir(root, kind, resumed=False, lock_fd=fd)
        _apply_policy(run, _Contents(root), given, resume, overwrite, what)  # the look that counts
        run.remove_temporaries()
        return run
    except BaseException:
        os.ftruncate(fd, 0)  # our pid must not outlive our hold
        os.close(fd)
        raise


def _refuse_not_a_run(c: _Contents, given: Path, resume: bool, what: str) -> None:
    if c.links:
        raise RunDirError(
            f"{what} {given}: {_listing(c.links)} is a symbolic link; a run never writes through a "
            "link — remove it or choose another " + what
        )
    if not c.is_run and (c.foreign or c.ours):
        raise RunDirError(
            f"{what} {given}: is not empty and holds no unrolled run ({_listing(c.foreign + c.ours)}); "
            f"choose an empty or new {what}"
        )
    if resume and not c.is_run:
        raise RunDirError(f"{what} {given}: holds no run to continue")


def _apply_policy(run: RunDir, c: _Contents, given: Path, resume: bool, overwrite: bool, what: str) -> None:
    _refuse_not_a_run(c, given, resume, what)
    held = f"a {c.kind} run" if c.kind else "a run"
    if resume:
        if c.kind is not None and c.kind != run.kind:
            raise RunDirError(
                f"{what} {given}: holds a {c.kind} run, not a {run.kind} run; --resume continues "
                f"only a run of the same kind — choose another {what}"
            )
        run.resumed = True
        if not c.marked and c.kind == run.kind:  # a run from before the marker, of a known kind
            write_json_atomic(run.root / MARKER, {"format": FORMAT, "version": VERSION, "kind": run.kind})
        return
    if c.is_run and not overwrite:
        raise RunDirError(
            f"{what} {given}: already holds {held}; continue it with --resume, replace it with "
            f"--overwrite, or choose another {what}"
        )
    if c.is_run:
        if c.foreign:
            raise RunDirError(
                f"{what} {given}: --overwrite removes only what unrolled wrote, and this run also holds "
                f"{_listing(c.foreign)}; move that away or choose another {what}"
            )
        _remove_ours(run.root, c.ours)
    write_json_atomic(run.root / MARKER, {"format": FORMAT, "version": VERSION, "kind": run.kind})
