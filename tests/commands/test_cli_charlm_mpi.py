"""``mpiexec -n 2 unrolled train charlm``: a data-parallel run of the command line, started here over 2
ranks on loopback with the ``mpiexec`` of the extra ``mpi`` (skipped, saying why, where it is absent)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from unrolled.checkpoint import load_checkpoint


def _mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def _why_not() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return 'mpi4py is not installed (pip install -e ".[mpi]")'
    return None if _mpiexec() else "no mpiexec next to this Python or on PATH"


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=f"MPI tests: {_why_not()}")
SMALL = "--hidden 16 --layers 1 --embed 8 --batch 5 --seq-len 12 --val-every 3".split()


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    words = ["the ", "cat ", "sat ", "on ", "a ", "mat. ", "and ", "then\n"]
    path = tmp_path_factory.mktemp("text") / "t.txt"
    path.write_text("".join(rng.choice(words, 3000)))
    return path


def unrolled(*args, ranks=2) -> subprocess.CompletedProcess:
    launcher = ("PMI_", "OMPI_", "PMIX_", "UNROLLED_QUICK")
    env = {k: v for k, v in os.environ.items() if not k.startswith(launcher)}
    cmd = [_mpiexec(), "-n", str(ranks), sys.executable, "-m", "unrolled.commands", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_two_ranks_write_one_run_and_resume_ends_where_the_uninterrupted_run_ends(tmp_path, text):
    whole = unrolled("train", "charlm", "--text", text, "--out", tmp_path / "whole", "--steps", 6, *SMALL)
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout.count("step 6 (max steps") == 1  # rank 0 alone reports
    assert "data-parallel over 2 ranks, 5 streams split among them" in whole.stdout
    rows = [json.loads(r) for r in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert all(r["tokens"] == 5 * 12 for r in rows if "loss" in r)  # the global batch's
    cut = unrolled("train", "charlm", "--text", text, "--out", tmp_path / "cut", "--steps", 3, *SMALL)
    assert cut.returncode == 0, cut.stderr
    again = unrolled("train", "charlm", "--out", tmp_path / "cut", "--resume", "--steps", 6, "--quiet")
    assert again.returncode == 0, again.stderr
    a, meta_a = load_checkpoint(tmp_path / "whole" / "last")
    b, meta_b = load_checkpoint(tmp_path / "cut" / "last")
    assert meta_b["trainer"]["step"] == 6 and a.keys() == b.keys()
    for k in a:  # weights, Adam's moments, the carried state of all 5 streams
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert meta_a["distributed"]["rng"] == meta_b["distributed"]["rng"]


def test_kinds_without_a_data_parallel_run_refuse_several_ranks(tmp_path):
    done = unrolled("train", "forecast", "--dataset", "sunspots", "--out", tmp_path / "f")
    assert done.returncode == 2
    assert "unrolled: error: train forecast: data-parallel runs over several ranks" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "f").exists()


def test_a_refused_out_ends_every_rank_at_once(tmp_path, text):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's file")
    done = unrolled("train", "charlm", "--text", text, "--out", tmp_path / "mine", "--steps", 2, *SMALL)
    assert done.returncode == 2 and "unrolled: error: --out" in done.stderr
    assert "Traceback" not in done.stderr
