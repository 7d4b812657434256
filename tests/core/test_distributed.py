"""Data-parallel training (unrolled.distributed): two ranks on loopback equal one process.

The MPI tests start the ranks themselves with the ``mpiexec`` of the extra ``mpi`` (MPICH's Hydra, next
to this Python) over 2 ranks, running tests/core/mpi_worker.py; they skip, saying why, where mpi4py or
mpiexec is absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from unrolled import distributed
from unrolled.checkpoint import load_checkpoint
from unrolled.tbptt import TokenStreams

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import mpi_worker  # noqa: E402


def _mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"  # the venv's, the one mpi4py was installed with
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def _have_mpi() -> str | None:
    """Why the MPI tests cannot run here, or None."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return 'mpi4py is not installed (pip install -e ".[mpi]")'
    if _mpiexec() is None:
        return 'no mpiexec next to this Python or on PATH (pip install -e ".[mpi]" installs MPICH\'s)'
    return None


needs_mpi = pytest.mark.skipif(_have_mpi() is not None, reason=f"MPI tests: {_have_mpi()}")


def run_ranks(out, steps, *args, n=2, timeout=90, env=None):
    """`mpiexec -n N python mpi_worker.py OUT STEPS ARGS` → CompletedProcess (never raises on failure)."""
    cmd = [_mpiexec(), "-n", str(n), sys.executable, str(HERE / "mpi_worker.py"), str(out), str(steps)]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    full_env.update(env or {})
    return subprocess.run(
        [*cmd, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=full_env
    )


def weights(out) -> dict[str, np.ndarray]:
    arrays, _ = load_checkpoint(Path(out) / "last")
    return arrays


# ----------------------------------------------------------------------------- one process, no MPI
def test_shard_splits_a_batch_into_contiguous_blocks_that_cover_it():
    for n, size in [(4, 2), (10, 4), (7, 7), (9, 1)]:
        blocks = [distributed.shard(n, r, size) for r in range(size)]
        assert blocks[0][0] == 0 and blocks[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:], strict=False))
        assert max(hi - lo for lo, hi in blocks) - min(hi - lo for lo, hi in blocks) <= 1
    with pytest.raises(ValueError, match="cannot be split across 3 ranks"):
        distributed.shard(2, 0, 3)
    with pytest.raises(ValueError, match="rank"):
        distributed.shard(4, 2, 2)


def test_launched_under_mpi_reads_the_launchers_environment():
    assert not distributed.launched_under_mpi({})
    assert not distributed.launched_under_mpi({"PMI_SIZE": "1"})  # a singleton run needs no MPI
    assert distributed.launched_under_mpi({"PMI_SIZE": "2"})  # MPICH / Hydra
    assert distributed.launched_under_mpi({"OMPI_COMM_WORLD_SIZE": "4"})  # Open MPI
    assert distributed.launched_under_mpi({"SLURM_PROCID": "0", "SLURM_NTASKS": "8"})  # srun
    assert not distributed.launched_under_mpi({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"})
    assert distributed.launched_under_mpi({"UNROLLED_MPI": "1"})


def test_world_without_a_launcher_is_one_local_rank_and_imports_no_mpi():
    code = (
        "import sys, unrolled.distributed as d, unrolled.train; w = d.world(); "
        "print(w.rank, w.size, 'mpi4py' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_", "SLURM_"))}
    env.pop("UNROLLED_MPI", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["0", "1", "False"]


def test_jumped_generator_states_give_each_rank_its_own_stream():
    rng = np.random.default_rng(1)
    state = {"model": rng.bit_generator.state, "rnn": np.random.default_rng(2).bit_generator.state}
    assert distributed.jump_rng_state(state, 0) == state
    one = distributed.jump_rng_state(state, 1)
    g0, g1 = np.random.default_rng(), np.random.default_rng()
    g0.bit_generator.state, g1.bit_generator.state = state["model"], one["model"]
    assert not np.array_equal(g0.random(8), g1.random(8))
    assert distributed.jump_rng_state(state, 1) == one  # a pure function of (state, jumps)


def test_a_share_of_token_streams_is_those_columns_of_every_chunk():
    ids = np.random.default_rng(0).integers(0, 9, 203).astype(np.uint8)
    whole = TokenStreams(ids, 5, 7)
    parts = [TokenStreams(ids, 5, 7, streams=distributed.shard(5, r, 2)) for r in range(2)]
    assert [p.batch_size for p in parts] == [3, 2] and all(len(p) == len(whole) for p in parts)
    assert parts[1]._ids.size == 2 * whole.stream_len + 1  # only the ids its streams read
    for i in range(len(whole)):
        full = whole[i]
        np.testing.assert_array_equal(np.concatenate([p[i].x for p in parts], axis=1), full.x)
        np.testing.assert_array_equal(np.concatenate([p[i].y for p in parts], axis=1), full.y)
    with pytest.raises(ValueError, match="streams"):
        TokenStreams(ids, 5, 7, streams=(3, 3))


def test_local_communicator_changes_nothing(tmp_path):
    alone = mpi_worker.train(tmp_path / "a", 3)
    local = mpi_worker.train(tmp_path / "b", 3, comm=distributed.Local())
    for k, v in alone.model.params.items():
        np.testing.assert_array_equal(v, local.model.params[k])


def test_timeout_must_be_a_positive_number(monkeypatch):
    with pytest.raises(ValueError, match="timeout"):
        distributed.Local(timeout=0)
    monkeypatch.setenv("UNROLLED_MPI_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="UNROLLED_MPI_TIMEOUT"):
        distributed.Local()


# ----------------------------------------------------------------------------- two ranks under mpiexec
@needs_mpi
@pytest.mark.parametrize("dtype, rtol", [("float32", 2e-5), ("float64", 1e-11)])
def test_two_ranks_end_with_the_weights_of_one_process(tmp_path, dtype, rtol):
    """Same global batch (5 streams: 3 and 2, so the ranks weigh unequally), seed and 8 steps of Adam with
    clipping: the same weights up to the order of the floating-point sums (float32 ~1e-7, float64 ~1e-16)."""
    done = run_ranks(tmp_path / "mpi", 8, "--dtype", dtype)
    assert done.returncode == 0, done.stderr
    one = mpi_worker.train(tmp_path / "one", 8, dtype=dtype)
    two = weights(tmp_path / "mpi")
    for k, v in one.model.params.items():
        np.testing.assert_allclose(two[f"model/{k}"], v, rtol=rtol, atol=rtol, err_msg=k)
    ones = weights(tmp_path / "one")
    for k in (k for k in ones if k.startswith(("state/", "optim/"))):  # carried state, Adam's moments
        np.testing.assert_allclose(two[k], ones[k], rtol=50 * rtol, atol=50 * rtol, err_msg=k)
    # Rank 0 alone wrote the metrics: one line per step, the global batch's tokens.
    rows = (tmp_path / "mpi" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 8 and all('"tokens": 30' in r for r in rows)


@needs_mpi
def test_a_killed_rank_ends_the_job_and_resume_equals_the_uninterrupted_run(tmp_path):
    """Rank 1 is killed (SIGKILL) in step 5, after the checkpoint of step 4: the job ends (no hang);
    resumed on 2 ranks it ends bit for bit where the uninterrupted 2-rank run ends — dropout on, so the
    generators of both ranks come back too."""
    whole = run_ranks(tmp_path / "whole", 8, "--dropout", "0.2")
    assert whole.returncode == 0, whole.stderr
    killed = run_ranks(tmp_path / "cut", 8, "--dropout", "0.2", "--kill-rank", 1, "--kill-at", 5)
    assert killed.returncode != 0
    assert load_checkpoint(tmp_path / "cut" / "last")[1]["trainer"]["step"] == 4
    resumed = run_ranks(tmp_path / "cut", 8, "--dropout", "0.2", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    meta = load_checkpoint(tmp_path / "cut" / "last")[1]
    rngs = meta["distributed"]["rng"]
    assert len(rngs) == 2 and rngs[0] != rngs[1]


@needs_mpi
def test_a_two_rank_checkpoint_resumes_in_one_process_and_ranks_that_disagree_are_refused(tmp_path):
    """The checkpoint's carried state is global (all 5 streams): one process continues the 2-rank run of
    4 steps to 8 and ends where the 2 ranks end, up to summation order (dropout off)."""
    assert run_ranks(tmp_path / "two", 4).returncode == 0
    shutil.copytree(tmp_path / "two", tmp_path / "one")
    # A rank that cannot see the run (no shared file system) would start afresh: the job refuses at once.
    shutil.copytree(tmp_path / "two", tmp_path / "blind")
    blind = run_ranks(tmp_path / "blind", 8, "--resume", "--blind-rank", 1)
    assert blind.returncode != 0
    said = "unrolled: error: the step to start from: the ranks disagree (rank 0: 4, rank 1: 0); is the "
    said += "checkpoint folder on a file system every rank sees?"
    assert said in blind.stderr
    assert run_ranks(tmp_path / "two", 8, "--resume").returncode == 0
    one = mpi_worker.train(tmp_path / "one", 8, resume=True)
    two = weights(tmp_path / "two")
    for k, v in one.model.params.items():
        np.testing.assert_allclose(two[f"model/{k}"], v, rtol=2e-5, atol=2e-5, err_msg=k)


@needs_mpi
def test_a_rank_that_raises_ends_every_rank_with_its_message(tmp_path):
    done = run_ranks(tmp_path / "r", 8, "--raise-rank", 1, "--raise-at", 3, timeout=60)
    assert done.returncode != 0
    assert "unrolled: error: rank 1: RuntimeError: rank 1 failed on purpose at step 3" in done.stderr


@needs_mpi
def test_a_hung_rank_ends_the_job_at_the_collective_timeout(tmp_path):
    done = run_ranks(
        tmp_path / "h", 8, "--hang-rank", 1, "--hang-at", 3, timeout=50, env={"UNROLLED_MPI_TIMEOUT": "3"}
    )
    assert done.returncode != 0
    said = "rank 0: no answer from the other ranks within 3 s at the gradient Allreduce of step 3"
    assert said in done.stderr
