"""Data-parallel throughput: tokens/s of one training run on 1 and on 2 ranks, beside torch (1 process, and
DistributedDataParallel on 2 processes over gloo), and the Allreduce's time on this machine's loopback.

python benchmarks/distributed.py run [--reps 3] [--steps 16] [--hidden 256] [--batch 32] [--seq-len 100]
    -> benchmarks/results/distributed.json and distributed.md
python benchmarks/distributed.py project [--rate R]  the cost model's table for 8, 64, 512 ranks
    (docs/distributed.md; R = a rank's sustained training FLOP/s, default the 1-rank run measured by `run`)
python benchmarks/distributed.py allreduce         (started by `run` under mpiexec -n 2: Allreduce timings)
python benchmarks/distributed.py torch-step ...    (started by `run`: one torch run, 1 or 2 processes)

Each configuration is run `reps` times, interleaved (1 rank, 2 ranks, torch 1, torch 2, then again), and
the median of its steps' tokens/s after the first 3 (warm-up, compilation) is kept; the table gives the
median over the repetitions. torch runs in one process at every core and at 1 thread (on a busy machine
its OpenMP threads can lose far more than they gain). unrolled's runs are `unrolled train charlm` on Tiny
Shakespeare (the shared data; else this package's own source), throughput as its metrics record it
(global tokens / rank 0's step time, the Allreduce included). Run with ``env -u OPENBLAS_CORETYPE -u
OPENBLAS_L2_SIZE`` as a user's machine has them; say the load (`uptime`), the machine being shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
HERE = Path(__file__).resolve()
SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "text" / "tinyshakespeare.txt"


def _mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else "mpiexec"


def _text(tmp: Path) -> Path:
    for p in (SHAKESPEARE, Path("/work/shared/data/text/tinyshakespeare.txt")):
        if p.exists():
            return p
    import unrolled

    src = "".join(p.read_text() for p in sorted(Path(unrolled.__file__).parent.rglob("*.py")))
    (tmp / "text.txt").write_text(src)
    return tmp / "text.txt"


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}


def unrolled_run(ranks: int, text: Path, a, tmp: Path, threads: int | None = None) -> dict:
    out = tmp / f"u{ranks}_{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "unrolled.commands", "train", "charlm", "--text", str(text),
           "--out", str(out), "--steps", str(a.steps), "--hidden", str(a.hidden), "--layers", "2",
           "--embed", "64",
           "--batch", str(a.batch), "--seq-len", str(a.seq_len), "--val-every", str(10 * a.steps),
           "--val-chars", "2000", "--quiet"]  # fmt: skip
    if ranks > 1:
        cmd = [_mpiexec(), "-n", str(ranks), *cmd]
    env = _clean_env() | ({"UNROLLED_THREADS": str(threads)} if threads else {})
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("tokens_per_s")][3:]
    waits = [r["allreduce_s"] for r in rows if "allreduce_s" in r]
    return {
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
        "allreduce_s": statistics.median(waits) if waits else None,
    }


def torch_run(ranks: int, a, threads: int | None = None) -> dict:
    cmd = [sys.executable, str(HERE), "torch-step", "--ranks", str(ranks), "--steps", str(a.steps),
           "--hidden", str(a.hidden), "--batch", str(a.batch), "--seq-len", str(a.seq_len)]  # fmt: skip
    if threads is not None:
        cmd += ["--threads", str(threads)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=_clean_env())
    return json.loads(done.stdout.strip().splitlines()[-1])


def cmd_torch_step(a) -> None:
    """torch: embedding → 2-layer LSTM → linear, Adam, the same shapes; `ranks` processes under DDP."""
    import torch
    import torch.multiprocessing as mp

    if a.ranks == 1:
        print(json.dumps(_torch_worker(0, 1, a, a.threads or torch.get_num_threads())))
        return
    with tempfile.TemporaryDirectory() as d:
        ctx = mp.get_context("spawn")
        q = ctx.SimpleQueue()
        procs = [ctx.Process(target=_torch_ddp, args=(r, a.ranks, a, d, q)) for r in range(a.ranks)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        results = [q.get() for _ in procs]
    print(json.dumps(next(r for r in results if r["rank"] == 0)))


def _torch_ddp(rank, size, a, d, q) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{d}/rendezvous", rank=rank, world_size=size)
    try:
        q.put(_torch_worker(rank, size, a, max(1, (os.cpu_count() or 1) // size)))
    finally:
        dist.destroy_process_group()


def _torch_worker(rank, size, a, threads) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    V, B = 65, a.batch // size

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(V, 64)
            self.rnn = torch.nn.LSTM(64, a.hidden, 2)
            self.head = torch.nn.Linear(a.hidden, V)

        def forward(self, x):
            return self.head(self.rnn(self.emb(x))[0])

    net = Net()
    if size > 1:
        net = torch.nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(rank)
    rates = []
    for _ in range(a.steps):
        x = torch.randint(0, V, (a.seq_len, B), generator=g)
        y = torch.randint(0, V, (a.seq_len, B), generator=g)
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x).reshape(-1, V), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        rates.append(a.seq_len * a.batch / (time.perf_counter() - t0))  # global tokens
    return {"rank": rank, "tokens_per_s": statistics.median(rates[3:]), "threads": threads}


def cmd_allreduce(a) -> None:
    """Under mpiexec: median time of an in-place Allreduce of n float32, for n over 3 decades."""
    from unrolled import distributed

    comm = distributed.world()
    out = {}
    for n in (1, 1_000, 100_000, 1_000_000, 4_000_000):
        buf = np.ones(n, np.float32)
        for _ in range(3):  # warm-up: the first calls set up the shared-memory channels
            comm.allreduce_(buf)
        times = []
        for _ in range(30 if n < 1_000_000 else 10):
            comm.barrier()
            t0 = time.perf_counter()
            comm.allreduce_(buf)
            times.append(time.perf_counter() - t0)
        out[n] = statistics.median(times)
    if comm.is_root:
        print(json.dumps(out))


def cmd_run(a) -> None:
    RESULTS.mkdir(exist_ok=True)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        text = _text(tmp)
        samples: dict[str, list[dict]] = {"unrolled 1 rank": [], "unrolled 1 rank, 1 thread": [],
                                          "unrolled 2 ranks": [],
                                          "torch 1 process": [], "torch 1 process, 1 thread": [],
                                          "torch DDP 2 processes": []}  # fmt: skip
        for rep in range(a.reps):
            samples["unrolled 1 rank"].append(unrolled_run(1, text, a, tmp))
            samples["unrolled 1 rank, 1 thread"].append(unrolled_run(1, text, a, tmp, threads=1))
            samples["unrolled 2 ranks"].append(unrolled_run(2, text, a, tmp))
            if not a.no_torch:
                samples["torch 1 process"].append(torch_run(1, a))
                samples["torch 1 process, 1 thread"].append(torch_run(1, a, threads=1))
                samples["torch DDP 2 processes"].append(torch_run(2, a))
            print(f"rep {rep + 1}/{a.reps}: " + ", ".join(
                f"{k} {v[-1]['tokens_per_s']:.0f}" for k, v in samples.items() if v), flush=True)  # fmt: skip
        ar = subprocess.run([_mpiexec(), "-n", "2", sys.executable, str(HERE), "allreduce"], check=True,
                            capture_output=True, text=True, env=_clean_env())  # fmt: skip
    allreduce = json.loads(ar.stdout.strip().splitlines()[-1])
    rows = {k: statistics.median(s["tokens_per_s"] for s in v) for k, v in samples.items() if v}
    waits = [s["allreduce_s"] for s in samples["unrolled 2 ranks"] if s["allreduce_s"] is not None]
    res = {
        "config": vars(a) | {"text": str(text), "layers": 2, "embed": 64},
        "load_before": load, "load_after": os.getloadavg(), "cores": os.cpu_count(),
        "tokens_per_s": rows, "samples": samples, "allreduce_seconds_by_floats": allreduce,
        "allreduce_wait_median_s": statistics.median(waits) if waits else None,
    }  # fmt: skip
    (RESULTS / "distributed.json").write_text(json.dumps(res, indent=1))
    base = rows["unrolled 1 rank"]
    md = [f"2-layer LSTM, H = {a.hidden}, E = 64, global batch {a.batch} × {a.seq_len} steps; median of "
          f"{a.reps} interleaved runs; load {load[0]:.1f} before, {os.getloadavg()[0]:.1f} after, "
          f"{os.cpu_count()} cores", "",
          "| run | tokens/s | vs unrolled 1 rank |", "|---|---:|---:|"]  # fmt: skip
    md += [f"| {k} | {v:,.0f} | {v / base:.2f}× |" for k, v in rows.items()]
    if res["allreduce_wait_median_s"] is not None:
        md += ["", f"unrolled 2 ranks: median time in the step's Allreduce (the wait for the other rank "
               f"included) {res['allreduce_wait_median_s'] * 1e3:.1f} ms"]  # fmt: skip
    md += ["", "| Allreduce of n float32 (2 ranks, loopback) | median |", "|---|---:|"]
    md += [f"| {int(n):,} | {t * 1e6:,.0f} µs |" for n, t in allreduce.items()]
    (RESULTS / "distributed.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


# ----------------------------------------------------------------------------- the cost model
def lstm_params(vocab: int, embed: int, hidden: int, layers: int) -> int:
    """P of embedding → LSTM stack → linear head: 4H(I + H + 1) per layer (W_xh, W_hh, b_h)."""
    rec = sum(4 * hidden * ((embed if k == 0 else hidden) + hidden + 1) for k in range(layers))
    return vocab * embed + rec + hidden * vocab + vocab


def step_seconds(P: int, tokens_per_rank: int, p: int, rate: float, bandwidth: float, latency: float):
    """(compute, allreduce) seconds of one data-parallel step (docs/distributed.md):

    compute   = 6 · P · tokens_per_rank / rate                  (forward 2P, backward 4P flops a token)
    allreduce = 2(p − 1) · latency + 2(p − 1)/p · 4P / bandwidth  (ring: reduce-scatter + all-gather of
                                                                   P float32; 0 on one rank)
    """
    compute = 6 * P * tokens_per_rank / rate
    ring = 0.0 if p == 1 else 2 * (p - 1) * latency + 2 * (p - 1) / p * 4 * P / bandwidth
    return compute, ring


MODELS = {  # name: (vocab, embed, hidden, layers)
    "2×256 LSTM (README's Shakespeare model)": (65, 64, 256, 2),
    "3×1024 LSTM": (256, 256, 1024, 3),
    "4×2048 LSTM": (32_000, 512, 2048, 4),
}
NETWORKS = {  # name: (bytes/s per link, seconds per message)
    "10 GbE": (1.25e9, 25e-6),
    "100 Gb/s InfiniBand": (12.5e9, 2e-6),
}


def cmd_project(a) -> None:
    """Per model, network and rank speed: the efficiency at the per-rank batch given, and the tokens per
    rank and step at which the Allreduce costs as much as the compute (50% efficiency)."""
    rates = {"R = 1e11 (a 32-64-core node, assumed)": 1e11, "R = 1e13 (GPU-class, for contrast)": 1e13}
    if a.rate is not None:
        rates = {f"R = {a.rate:.3g}": a.rate, **rates}
    elif (RESULTS / "distributed.json").exists():
        res = json.loads((RESULTS / "distributed.json").read_text())
        c = res["config"]
        P = lstm_params(65, c["embed"], c["hidden"], c["layers"])
        tps = res["tokens_per_s"]["unrolled 1 rank"]
        rates = {
            f"R = {6 * P * tps:.3g} (measured here: 1 rank, {tps:,.0f} tokens/s × 6P)": 6 * P * tps,
            **rates,
        }
    tokens = a.batch * a.seq_len
    lines = [f"per-rank batch b = {a.batch} sequences × T = {a.seq_len} steps = {tokens:,} tokens a step; "
             "each cell: efficiency = compute / (compute + ring Allreduce) at that batch, in brackets the "
             "tokens per rank and step below which the Allreduce costs more than the compute", "",
             "| model (P) | rank speed R (FLOP/s) | network | p = 8 | p = 64 | p = 512 |",
             "|---|---|---|---:|---:|---:|"]  # fmt: skip
    for name, shape in MODELS.items():
        P = lstm_params(*shape)
        for rname, rate in rates.items():
            for net, (bw, lat) in NETWORKS.items():
                cells = []
                for p in (8, 64, 512):
                    comp, ring = step_seconds(P, tokens, p, rate, bw, lat)
                    even = ring * rate / (6 * P)  # tokens per rank at which compute = Allreduce
                    cells.append(f"{comp / (comp + ring):.0%} ({even:,.0f})")
                row = f"| {name} ({P / 1e6:.2f} M) | {rname} | {net} | "
                lines.append(row + " | ".join(cells) + " |")
    print("\n".join(lines))


def _t(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms" if seconds < 1 else f"{seconds:,.2f} s"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--reps", type=int, default=3)
    r.add_argument("--no-torch", action="store_true")
    t = sub.add_parser("torch-step")
    t.add_argument("--ranks", type=int, default=1)
    t.add_argument("--threads", type=int, help="torch's threads in one process (default: every core)")
    for q in (r, t):
        q.add_argument("--steps", type=int, default=16)
        q.add_argument("--hidden", type=int, default=256)
        q.add_argument("--batch", type=int, default=32)
        q.add_argument("--seq-len", type=int, default=100)
    sub.add_parser("allreduce")
    j = sub.add_parser("project")
    j.add_argument("--rate", type=float, help="a rank's sustained training FLOP/s (default: measured)")
    j.add_argument("--seq-len", type=int, default=100)
    j.add_argument("--batch", type=int, default=32, help="sequences per rank and step")
    a = p.parse_args()
    commands = {
        "run": cmd_run,
        "torch-step": cmd_torch_step,
        "allreduce": cmd_allreduce,
        "project": cmd_project,
    }
    commands[a.cmd](a)


if __name__ == "__main__":
    main()
