"""Data-parallel training on MPI: every rank holds the whole model and a share of each global batch.

One training step on p ranks, each holding the same parameters θ and its share of the global batch
(n_r of the N = Σ_r n_r tokens)::

    g_r  = ∂L_r/∂θ                 the rank's loss_fn: mean loss over its own n_r tokens, backward
    g    = (Σ_r n_r · g_r) / N      one in-place Allreduce (sum) of a flat buffer [n_r·g_r, n_r·L_r, n_r,
                                    flags]: the gradient of the global mean loss, the global mean loss,
                                    N, and the stop flags (a signal, the time limit) — one collective
    θ   ← optimizer(θ, g)           the same update on every rank: θ stays identical everywhere

So p ranks compute what one process computes over the whole global batch, up to the order of the float32
sums (a rank sums its own tokens, the Allreduce sums the ranks). At the start, rank 0 broadcasts the
parameters and the optimizer state (:meth:`Communicator.broadcast_arrays`), so every rank starts equal;
dropout masks come from each rank's own stream (rank r's generators jumped r·2¹²⁷ steps ahead,
:func:`jump_rng_state`), so no two ranks draw the same masks.

Where it runs. :func:`world` is MPI's ``COMM_WORLD`` through mpi4py when the process was launched by an
MPI launcher (``mpiexec``, ``mpirun``, ``srun``: :func:`launched_under_mpi` reads their environment) or
when ``UNROLLED_MPI=1`` asks for it; otherwise a :class:`Local` communicator of one rank, whose
collectives return at once — so everything works unchanged in one process, and mpi4py is imported only
under MPI (the extra ``mpi``).

No hang. Every collective is non-blocking (``Iallreduce``, ``Ibcast``, ``Igatherv``…) and polled against
a deadline (``timeout`` seconds, default :data:`DEFAULT_TIMEOUT` or ``UNROLLED_MPI_TIMEOUT``): a rank
that waits longer — another rank died, hung, or raised — prints one ``unrolled: error: rank r: …`` line
and aborts the job (``MPI_Abort``), which ends every rank. A rank that raises ends the job too: the
command line aborts after its error line, and under several ranks :func:`world` installs an exception hook
that aborts after the traceback of an exception nobody caught, so the others never wait for it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_TIMEOUT",
    "Communicator",
    "Local",
    "MPIComm",
    "current",
    "jump_rng_state",
    "launched_under_mpi",
    "shard",
    "world",
]

DEFAULT_TIMEOUT = 600.0  # seconds a rank waits in one collective before it aborts the job
# Set by the launchers: MPICH/Hydra and Intel MPI (PMI_*), Open MPI (OMPI_*), PMIx (Open MPI 5, srun
# --mpi=pmix), Slurm's srun with more than one task.
_LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
_world: Communicator | None = None


def launched_under_mpi(environ: dict[str, str] | None = None) -> bool:
    """Whether this process looks started by an MPI launcher with more than one rank, from its environment
    (``PMI_SIZE``, ``OMPI_COMM_WORLD_SIZE``, ``PMIX_SIZE``, ``MPI_LOCALNRANKS``, or ``SLURM_NTASKS`` > 1
    with ``SLURM_PROCID``), or ``UNROLLED_MPI=1`` asks for MPI."""
    env = os.environ if environ is None else environ
    if env.get("UNROLLED_MPI", "").strip() in ("1", "true", "yes"):
        return True
    for var in _LAUNCHER_SIZE_VARS:
        if _int(env.get(var)) > 1:
            return True
    return "SLURM_PROCID" in env and _int(env.get("SLURM_NTASKS")) > 1


def _int(s: str | None) -> int:
    try:
        return int(str(s).strip())
    except ValueError:
        return 0


def shard(n: int, rank: int, size: int) -> tuple[int, int]:
    """The contiguous block [lo, hi) of n items that `rank` of `size` takes: sizes differ by at most one,
    the larger blocks first (n = 10, size = 4: 3, 3, 2, 2)."""
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank: expected 0 <= rank < size = {size}, got {rank}")
    if n < size:
        raise ValueError(f"n: {n} items cannot be split across {size} ranks (each needs at least one)")
    base, extra = divmod(n, size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def jump_rng_state(state: Any, jumps: int) -> Any:
    """The generator states of `state` (a ``bit_generator.state`` dict, or dicts/lists of them, as a
    model's ``rng_state()`` returns) each advanced by ``jumps`` · 2¹²⁷ draws (``BitGenerator.jumped``):
    a stream that does not overlap the original's for any practical run. 0 jumps: `state` unchanged."""
    if jumps == 0:
        return state
    if isinstance(state, dict) and "bit_generator" in state:
        bg = getattr(np.random, state["bit_generator"])()
        bg.state = state
        return bg.jumped(jumps).state
    if isinstance(state, dict):
        return {k: jump_rng_state(v, jumps) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(jump_rng_state(v, jumps) for v in state)
    return state


class Communicator:
    """The collectives the Trainer needs. :class:`Local` (one process) and :class:`MPIComm` implement it.

    Attributes: ``rank``, ``size``, ``timeout`` (seconds per collective).
    """

    rank: int = 0
    size: int = 1
    timeout: float = DEFAULT_TIMEOUT

    @property
    def is_root(self) -> bool:
        """Rank 0: the one that writes metrics, checkpoints and the run directory."""
        return self.rank == 0

    def allreduce_(self, buf: np.ndarray, what: str = "allreduce") -> np.ndarray:
        """Sum the contiguous array `buf` over the ranks, in place; returns it."""
        return buf

    def broadcast_(self, buf: np.ndarray, what: str = "broadcast") -> np.ndarray:
        """Overwrite the contiguous array `buf` with rank 0's, in place; returns it."""
        return buf

    def gather_rows(self, a: np.ndarray, axis: int, what: str = "gather") -> np.ndarray | None:
        """Rank 0: the ranks' arrays concatenated along `axis` in rank order; other ranks: None."""
        return a

    def gather_bytes(self, b: bytes, what: str = "gather") -> list[bytes] | None:
        """Rank 0: every rank's bytes, in rank order; other ranks: None."""
        return [b]

    def barrier(self, what: str = "barrier") -> None:
        """Wait until every rank is here."""

    def abort(self, message: str | None, code: int = 1) -> None:
        """End the whole job: print ``unrolled: error: <message>`` (unless None) and exit with `code`."""
        if message is not None:
            _say(f"unrolled: error: {message}")
        raise SystemExit(code)

    # ----------------------------------------------------------------- built on the above
    def broadcast_arrays(self, arrays: dict[str, np.ndarray], what: str = "broadcast") -> None:
        """Overwrite every array of `arrays` (same names, shapes and dtypes on every rank) with rank 0's,
        in place: one flat buffer per dtype."""
        if self.size == 1:
            return
        by_dtype: dict[np.dtype, list[str]] = {}
        for k in sorted(arrays):
            by_dtype.setdefault(arrays[k].dtype, []).append(k)
        for dtype, names in sorted(by_dtype.items(), key=lambda kv: kv[0].str):
            flat = np.concatenate([arrays[k].ravel() for k in names]) if names else np.empty(0, dtype)
            self.broadcast_(flat, what)
            at = 0
            for k in names:
                a = arrays[k]
                a[...] = flat[at : at + a.size].reshape(a.shape)
                at += a.size

    def broadcast_json(self, obj: Any, what: str = "broadcast") -> Any:
        """Rank 0's JSON-able `obj` on every rank (sent as UTF-8 JSON, never pickled)."""
        if self.size == 1:
            return obj
        data = json.dumps(obj).encode() if self.is_root else b""
        n = self.broadcast_(np.array([len(data)], np.int64), what)
        buf = np.frombuffer(data, np.uint8).copy() if self.is_root else np.empty(int(n[0]), np.uint8)
        self.broadcast_(buf, what)
        return json.loads(buf.tobytes().decode())

    def check_same(self, value: float, what: str, hint: str = "") -> None:
        """Abort the job unless every rank passes the same number `value` (a consistency check): ``<what>:
        the ranks disagree (rank 0: …, rank 1: …)<hint>``."""
        if self.size == 1:
            return
        seen = self.gather_bytes(np.array([value], np.float64).tobytes(), what)
        if seen is not None:
            values = [float(np.frombuffer(b, np.float64)[0]) for b in seen]
            if len(set(values)) > 1:
                each = ", ".join(f"rank {i}: {v:g}" for i, v in enumerate(values))
                self.abort(f"{what}: the ranks disagree ({each}){hint}")
        self.barrier(what)


class Local(Communicator):
    """One process, no MPI: rank 0 of 1; every collective returns at once."""

    def __init__(self, timeout: float | None = None) -> None:
        self.rank, self.size = 0, 1
        self.timeout = _timeout(timeout)

    def __repr__(self) -> str:
        return "Local()"


class MPIComm(Communicator):
    """A communicator of mpi4py (``MPI.COMM_WORLD`` by default) with a deadline on every collective.

    Each collective starts non-blocking and is polled (``Request.Test``) until it completes or
    ``timeout`` seconds pass; then this rank aborts the job naming what it waited for.
    """

    def __init__(self, comm=None, timeout: float | None = None) -> None:
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout = _timeout(timeout)

    def __repr__(self) -> str:
        return f"MPIComm(rank={self.rank}, size={self.size}, timeout={self.timeout:g})"

    def _wait(self, req, what: str) -> None:
        """Poll `req` until done; past the deadline, abort the job. After 64 quick polls (a fast collective
        returns within them), sleeps between polls grow from 10 µs to 1 ms, so that a rank waiting for a
        slower one leaves the core to it (2 ranks on 2 busy cores)."""
        deadline = time.monotonic() + self.timeout
        polls = 0
        while not req.Test():
            polls += 1
            if polls > 64:
                if time.monotonic() > deadline:
                    self.abort(
                        f"rank {self.rank}: no answer from the other ranks within {self.timeout:g} s at "
                        f"{what} (a rank failed, was killed or hangs); ending the job"
                    )
                time.sleep(min(1e-3, 1e-5 * (polls - 64)))

    def allreduce_(self, buf: np.ndarray, what: str = "allreduce") -> np.ndarray:
        self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, _contiguous(buf), op=self.MPI.SUM), what)
        return buf

    def broadcast_(self, buf: np.ndarray, what: str = "broadcast") -> np.ndarray:
        self._wait(self.comm.Ibcast(_contiguous(buf), root=0), what)
        return buf

    def gather_bytes(self, b: bytes, what: str = "gather") -> list[bytes] | None:
        mine, sizes = np.array([len(b)], np.int64), np.zeros(self.size, np.int64)  # alive until done
        self._wait(self.comm.Iallgather(mine, sizes), what)
        send = np.frombuffer(b, np.uint8) if b else np.empty(0, np.uint8)
        if self.is_root:
            recv = np.empty(int(sizes.sum()), np.uint8)
            displs = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            spec = [recv, (sizes.tolist(), displs.tolist()), self.MPI.BYTE]
        else:
            spec = None
        self._wait(self.comm.Igatherv(send, spec, root=0), what)
        if not self.is_root:
            return None
        return [recv[d : d + s].tobytes() for d, s in zip(displs, sizes, strict=True)]

    def gather_rows(self, a: np.ndarray, axis: int, what: str = "gather") -> np.ndarray | None:
        moved = np.ascontiguousarray(np.moveaxis(a, axis, 0))
        parts = self.gather_bytes(moved.tobytes(), what)
        if parts is None:
            return None
        rest = moved.shape[1:]
        blocks = [np.frombuffer(p, a.dtype).reshape((-1, *rest)) for p in parts]
        return np.moveaxis(np.concatenate(blocks, axis=0), 0, axis).copy()

    def barrier(self, what: str = "barrier") -> None:
        self._wait(self.comm.Ibarrier(), what)

    def abort(self, message: str | None, code: int = 1) -> None:
        if message is not None:
            _say(f"unrolled: error: {message}")
        sys.stderr.flush()
        # MPI_Abort kills every process at once, the launcher's output forwarding included: on a busy
        # machine MPICH's proxy had not yet passed the line on and the job ended with empty stderr.
        time.sleep(ABORT_GRACE_S)
        self.comm.Abort(code)


ABORT_GRACE_S = 1.0  # seconds between the error line and MPI_Abort: the launcher forwards the line first


def _contiguous(buf: np.ndarray) -> np.ndarray:
    if not (isinstance(buf, np.ndarray) and buf.flags.c_contiguous and buf.flags.writeable):
        raise ValueError("buf: expected a writeable C-contiguous NumPy array (the collective is in place)")
    return buf


def _timeout(timeout: float | None) -> float:
    if timeout is None:
        env = os.environ.get("UNROLLED_MPI_TIMEOUT", "").strip()
        if not env:
            return DEFAULT_TIMEOUT
        try:
            timeout = float(env)
        except ValueError:
            raise ValueError(f"UNROLLED_MPI_TIMEOUT: expected a number of seconds, got {env!r}") from None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < float("inf"):
        raise ValueError(f"timeout: expected a positive number of seconds, got {timeout!r}")
    return float(timeout)


def world(timeout: float | None = None) -> Communicator:
    """This job's communicator: :class:`MPIComm` over ``COMM_WORLD`` when launched under MPI (see
    :func:`launched_under_mpi`), else :class:`Local`. Created once (MPI is initialised at the first call);
    `timeout` (seconds per collective) applies to that first call only.

    Raises ImportError with the install hint when launched under MPI without mpi4py installed.
    """
    global _world
    if _world is None:
        if launched_under_mpi():
            from unrolled._optional import require

            require("a run under mpiexec", "mpi4py", "mpi")
            _world = MPIComm(timeout=timeout)
            if _world.size > 1:
                _abort_on_uncaught(_world)
        else:
            _world = Local(timeout)
    return _world


def _abort_on_uncaught(comm: Communicator) -> None:
    """An exception nobody caught on one rank ends the job after its traceback (else the other ranks
    would wait for this one in their next collective until the timeout)."""
    before = sys.excepthook

    def hook(kind, value, tb):
        before(kind, value, tb)
        comm.abort(f"rank {comm.rank}: {kind.__name__}: {value}".splitlines()[0], 1)

    sys.excepthook = hook


def current() -> Communicator | None:
    """The communicator :func:`world` made, or None before its first call (nothing is initialised here)."""
    return _world


def _say(line: str) -> None:
    try:
        os.write(2, (line + "\n").encode("utf-8", "replace"))
    except OSError:
        pass
