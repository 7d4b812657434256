"""A forked child (multiprocessing's default start on Linux) can run a split layer: the worker pool of the
parent does not exist there, and the child must start its own instead of queueing slices forever."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import os, signal
    import numpy as np
    from unrolled import LSTM, kernels

    layer = LSTM(64, 256, seed=0)
    x = np.random.default_rng(0).standard_normal((20, 64, 64)).astype(np.float32)
    with kernels.using(jit=True):
        out, _ = layer(x)  # the parent's pool now holds threads
        pid = os.fork()
        if pid == 0:
            signal.alarm(60)  # a hang dies by SIGALRM instead of blocking the test
            again, _ = layer(x)
            os._exit(0 if np.array_equal(out, again) else 3)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status))
    """
)


def test_a_forked_child_runs_a_split_layer_and_gets_the_parents_result():
    pytest.importorskip("numba", reason="the batch split runs in the compiled path")
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0", f"child exit {r.stdout.strip()} (-14: hung on the parent's dead pool)"
