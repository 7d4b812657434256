"""The benchmark grid: unrolled against torch.nn, side by side in one process, float32, same threads.

Every number comes from this run: the matrix-product peak, the per-row medians, the ratios. The FLOP
count is that of the matrix products only (2·T·B·G·H·(I + H) per layer and direction forward, three times
that for a training step: forward, ∂/∂inputs and ∂/∂weights); the gate arithmetic is not counted.
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import asdict, dataclass

import numpy as np

from unrolled.bench import memory
from unrolled.bench.timing import (
    cpu_model,
    interleaved,
    load_average,
    matmul_peak,
    median,
    set_clock,
    set_threads,
)

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


@dataclass(frozen=True)
class Config:
    cell: str  # "rnn" | "lstm" | "gru"
    T: int
    B: int
    I: int
    H: int
    layers: int = 1
    bidirectional: bool = False

    @property
    def name(self) -> str:
        bi = " bi" if self.bidirectional else ""
        return f"{self.cell.upper()} L{self.layers}{bi} T={self.T} B={self.B} I={self.I} H={self.H}"

    def forward_flops(self) -> float:
        D, G, H = (2 if self.bidirectional else 1), GATES[self.cell], self.H
        total = 0.0
        for layer in range(self.layers):
            I = self.I if layer == 0 else D * H
            total += D * 2.0 * self.T * self.B * G * H * (I + H)
        return total


# The grid of the issue, then one bidirectional row (the reverse direction has its own code path).
GRID = [
    Config("lstm", 100, 32, 64, 128),
    Config("lstm", 50, 64, 256, 256, layers=2),
    Config("lstm", 64, 16, 128, 512),
    Config("gru", 100, 32, 64, 128),
    Config("gru", 50, 64, 256, 256),
    Config("rnn", 100, 32, 64, 128),
    Config("lstm", 200, 1, 32, 32),
    Config("gru", 100, 32, 64, 128, layers=2, bidirectional=True),
]
QUICK_GRID = [GRID[0], GRID[3], GRID[5], GRID[6]]
# Peak memory of a training step, for the large configurations (one fresh process per measurement).
MEMORY_GRID = [GRID[1], GRID[2], GRID[4]]
STREAM_H = (32, 128, 512)


def make_pair(cfg: Config, torch, seed: int = 0):
    """An unrolled layer and the torch.nn module with the same weights (float32)."""
    import unrolled
    from unrolled.interop.torch import to_torch

    cls = {"rnn": unrolled.RNN, "lstm": unrolled.LSTM, "gru": unrolled.GRU}[cfg.cell]
    layer = cls(cfg.I, cfg.H, num_layers=cfg.layers, bidirectional=cfg.bidirectional, seed=seed)
    return layer, to_torch(layer) if torch is not None else None


def _inputs(cfg: Config, seed: int = 1):
    rng = np.random.default_rng(seed)
    D = 2 if cfg.bidirectional else 1
    x = rng.standard_normal((cfg.T, cfg.B, cfg.I), dtype=np.float32)
    d_out = rng.standard_normal((cfg.T, cfg.B, D * cfg.H), dtype=np.float32)
    return x, d_out


def step_fns(cfg: Config, torch, train: bool):
    """The two callables of one row: unrolled's and torch's training step (or inference forward)."""
    layer, module = make_pair(cfg, torch)
    x, d_out = _inputs(cfg)
    if train:

        def ours():
            layer.forward(x)
            layer.backward(d_out)

    else:

        def ours():
            layer.forward(x)

    fns = {"unrolled": ours}
    if module is not None:
        xt, dt = torch.from_numpy(x.copy()), torch.from_numpy(d_out)
        params = list(module.parameters())
        if train:
            xt.requires_grad_(True)  # unrolled always returns ∂L/∂x: make torch compute it too

            def theirs():
                xt.grad = None
                for p in params:
                    p.grad = None
                out, _ = module(xt)
                out.backward(dt)

        else:

            def theirs():
                with torch.inference_mode():
                    module(xt)

        fns["torch"] = theirs
    return fns


def run_grid(grid, torch, reps: int, peak: float, log=print) -> list[dict]:
    rows = []
    for cfg in grid:
        for train in (True, False):
            samples = interleaved(step_fns(cfg, torch, train), reps)
            flops = cfg.forward_flops() * (3 if train else 1)
            row = {"config": cfg.name, **asdict(cfg), "mode": "train" if train else "infer", "flops": flops}
            for lib, s in samples.items():
                t = median(s)
                row[f"{lib}_s"] = t
                row[f"{lib}_gflops"] = flops / t / 1e9
                row[f"{lib}_peak_frac"] = flops / t / 1e9 / peak
            if "torch_s" in row:
                row["ratio"] = row["unrolled_s"] / row["torch_s"]
            rows.append(row)
            log(_fmt_row(row))
    return rows


def _fmt_row(row: dict) -> str:
    s = f"  {row['config']:<42} {row['mode']:<5} unrolled {row['unrolled_s'] * 1e3:9.2f} ms"
    if "torch_s" in row:
        s += f"  torch {row['torch_s'] * 1e3:9.2f} ms  ratio {row['ratio']:.2f}"
    return s + f"  {row['unrolled_gflops']:.1f} GFLOP/s"


def run_streaming(torch, reps: int, hs=STREAM_H, log=print) -> list[dict]:
    """One ``step()`` at B = 1 (I = H) against torch.nn.LSTMCell / GRUCell / RNNCell under no_grad."""
    import unrolled

    rows = []
    for cell in ("lstm", "gru", "rnn"):
        for H in hs:
            cls = {"rnn": unrolled.RNN, "lstm": unrolled.LSTM, "gru": unrolled.GRU}[cell]
            layer = cls(H, H, seed=0)
            x = np.random.default_rng(0).standard_normal((1, H), dtype=np.float32)
            _, state = layer.step(x)
            fns = {"unrolled": lambda layer=layer, x=x, state=state: layer.step(x, state)}
            if torch is not None:
                tcls = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[cell]
                tcell = tcls(H, H)
                xt, ht = torch.from_numpy(x), torch.zeros(1, H)
                st = (ht, torch.zeros(1, H)) if cell == "lstm" else ht

                def theirs(tcell=tcell, xt=xt, st=st):
                    with torch.no_grad():
                        tcell(xt, st)

                fns["torch"] = theirs
            inner = 200 if H <= 128 else 20
            samples = interleaved(fns, reps, warmup=1, inner=inner)
            row = {"cell": cell, "H": H, "B": 1, **{f"{k}_s": median(v) for k, v in samples.items()}}
            if "torch_s" in row:
                row["ratio"] = row["unrolled_s"] / row["torch_s"]
            rows.append(row)
            r = f"  ratio {row['ratio']:.2f}" if "ratio" in row else ""
            t = f"  torch {row['torch_s'] * 1e6:8.1f} us" if "torch_s" in row else ""
            log(f"  step {cell.upper():<4} H={H:<4} B=1  unrolled {row['unrolled_s'] * 1e6:8.1f} us{t}{r}")
    return rows


def scaling_grid(quick: bool) -> dict[str, list[Config]]:
    """LSTM training step around T=50 B=16 I=64 H=128, varying one of T, H, B at a time."""
    base = dict(T=50, B=16, I=64, H=128)
    vals = {"T": (25, 50, 100, 200), "H": (32, 64, 128, 256, 512), "B": (1, 4, 16, 64)}
    if quick:
        vals = {"T": (25, 50, 100), "H": (32, 64, 128), "B": (1, 4, 16)}
    return {k: [Config("lstm", **{**base, k: v}) for v in vs] for k, vs in vals.items()}


def run_scaling(torch, reps: int, quick: bool, log=print) -> list[dict]:
    rows = []
    for axis, cfgs in scaling_grid(quick).items():
        for cfg in cfgs:
            samples = interleaved(step_fns(cfg, torch, True), reps)
            row = {"axis": axis, "value": getattr(cfg, axis), "config": cfg.name}
            row.update({f"{k}_s": median(v) for k, v in samples.items()})
            rows.append(row)
            t = f"  torch {row['torch_s'] * 1e3:8.2f} ms" if "torch_s" in row else ""
            log(f"  scaling {axis}={row['value']:<4} unrolled {row['unrolled_s'] * 1e3:8.2f} ms{t}")
    return rows


def geomean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def summarize(rows, streaming) -> dict:
    out = {}
    for mode in ("train", "infer"):
        ratios = [r["ratio"] for r in rows if r["mode"] == mode and "ratio" in r]
        if ratios:
            out[f"{mode}_geomean_ratio"] = geomean(ratios)
            out[f"{mode}_worst_ratio"] = max(ratios)
    s = [r["ratio"] for r in streaming if "ratio" in r]
    if s:
        out["stream_geomean_ratio"] = geomean(s)
        out["stream_worst_ratio"] = max(s)
    big = [r for r in rows if r["H"] >= 512]
    if big:
        out["large_min_peak_frac"] = {r["mode"]: r["unrolled_peak_frac"] for r in big}
    return out


def run_suite(
    quick: bool = False, threads: int = 1, with_torch: bool = True, memory_too: bool = True, log=print
) -> dict:
    """Run everything and return the results as a JSON-ready dict."""
    import unrolled
    from unrolled import kernels

    torch = None
    if with_torch:
        try:
            import torch
        except ImportError:
            log("torch is not installed: timing unrolled alone (pip install 'unrolled[torch]')")
    reps = 5 if quick else 9
    started, load_start = time.time(), load_average()
    threads_set = set_threads(threads, torch)
    clock = "thread_cpu" if threads == 1 else "wall"
    set_clock(clock)
    log(f"threads {threads_set}; clock {clock}; unrolled path: {kernels.describe()}")
    peak = matmul_peak(torch, n=512 if quick else 1024, reps=reps)
    log(f"float32 matrix-product peak: {peak['peak_gflops']:.1f} GFLOP/s {peak}")
    rows = run_grid(QUICK_GRID if quick else GRID, torch, reps, peak["peak_gflops"], log=log)
    streaming = run_streaming(torch, reps, hs=STREAM_H[:2] if quick else STREAM_H, log=log)
    scaling = run_scaling(torch, max(3, reps - 4), quick, log=log)
    mem = []
    if memory_too:
        for cfg in MEMORY_GRID[:1] if quick else MEMORY_GRID:
            mem.append(memory.compare(cfg, threads, with_torch=torch is not None))
            log(f"  memory {mem[-1]}")
    return {
        "machine": {
            "cpu": cpu_model(),
            "logical_cpus": __import__("os").cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__ if torch is not None else None,
            "threads": threads_set,
            "load_average_start": load_start,
        },
        "unrolled": {"version": unrolled.__version__, "path": kernels.describe()},
        "quick": quick,
        "reps": reps,
        "clock": clock,
        "matmul_peak": peak,
        "rows": rows,
        "streaming": streaming,
        "scaling": scaling,
        "memory": mem,
        "summary": summarize(rows, streaming),
        "seconds": round(time.time() - started, 1),
        "load_average_end": load_average(),
    }
