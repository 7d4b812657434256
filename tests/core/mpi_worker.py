"""One rank of the data-parallel tests (tests/core/test_distributed.py starts it with ``mpiexec -n 2``, or
runs :func:`train` in one process): a tiny character model trained by the Trainer over TokenStreams.

``python mpi_worker.py OUT STEPS [--dtype float64] [--resume] [--dropout P] [--kill-rank R --kill-at S]
[--raise-rank R --raise-at S] [--hang-rank R --hang-at S] [--blind-rank R]``
"""

from __future__ import annotations

import argparse
import os
import signal
import time

import numpy as np

from unrolled import distributed
from unrolled.models import ModelConfig, SequenceModel
from unrolled.optim import Adam
from unrolled.tbptt import TokenStreams, lm_loss
from unrolled.train import Trainer

V, B, K = 7, 5, 6  # vocabulary, global batch (5 streams: 3 on rank 0, 2 on rank 1), chunk length


def corpus() -> np.ndarray:
    return np.random.default_rng(5).integers(0, V, 4 * B * K * 3 + 1).astype(np.uint8)


def train(out, steps, *, comm=None, dtype="float32", resume=False, dropout=0.0, hook=None) -> Trainer:
    comm = comm or distributed.Local()
    model = SequenceModel(ModelConfig(vocab_size=V, embed_dim=5, hidden_size=8, cell="lstm", num_layers=2,
                                      dropout=dropout, dtype=dtype, seed=3))  # fmt: skip
    streams = TokenStreams(corpus(), B, K, streams=distributed.shard(B, comm.rank, comm.size))

    def loss_fn(m, batch, state):
        if hook is not None:
            hook(trainer.step + 1)
        return lm_loss(m, batch, state)

    trainer = Trainer(model, Adam(model.params, lr=0.05), streams, loss_fn, carry_state=True,
                      max_steps=steps, clip_norm=1.0, checkpoint_dir=out, checkpoint_every=2,
                      metrics_path=os.path.join(out, "metrics.jsonl"), progress=False, comm=comm)  # fmt: skip
    trainer.fit(resume=resume)
    return trainer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("steps", type=int)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--blind-rank", type=int, help="this rank sees no run (no shared disk)")
    for what in ("kill", "raise", "hang"):
        p.add_argument(f"--{what}-rank", type=int)
        p.add_argument(f"--{what}-at", type=int)
    a = p.parse_args()
    comm = distributed.world()

    def hook(step: int) -> None:
        if comm.rank == a.kill_rank and step == a.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if comm.rank == a.raise_rank and step == a.raise_at:
            raise RuntimeError(f"rank {comm.rank} failed on purpose at step {step}")
        if comm.rank == a.hang_rank and step == a.hang_at:
            time.sleep(60)

    # An exception is not caught: world()'s hook aborts the job after its traceback.
    out = f"{a.out}_blind" if comm.rank == a.blind_rank else a.out
    train(out, a.steps, comm=comm, dtype=a.dtype, resume=a.resume, dropout=a.dropout, hook=hook)


if __name__ == "__main__":
    main()
