"""The benchmark grid: unrolled against torch.nn, side by side in one process, float32, same threads.

Every number comes from this run: the matrix-product peak, the per-row medians, the ratios. The FLOP
count is that of the matrix products only (2·T·B·G·H·(I + H) per layer and direction forward, three times
that for a training step: forward, ∂/∂inputs and ∂/∂weights); the gate arithmetic is not counted.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from unrolled._optional import install_hint
from unrolled.bench import memory, timing
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


def _use(lib: str, n: int, torch) -> Callable[[], None]:
    """Set ``lib``'s threads to n (untimed, before each of its samples)."""
    if lib == "torch":
        return lambda: torch.set_num_threads(n)
    from unrolled import threads

    return lambda: threads.set_threads(n)


RETAKE = 3  # a sample taken while other processes kept a core busy is taken again, up to this many times


def time_contenders(fns: dict, torch, counts, reps: int, warmup: int = 2, inner: int = 1) -> dict:
    """Each library's callable at each thread count in ``counts``, interleaved; {(lib, n): median s}."""
    runs = {f"{lib}@{n}": fn for lib, fn in fns.items() for n in counts}
    before = {f"{lib}@{n}": _use(lib, n, torch) for lib in fns for n in counts}
    samples = interleaved(runs, reps, warmup=warmup, inner=inner, before=before, retake=RETAKE)
    return {(name.split("@")[0], int(name.split("@")[1])): median(v) for name, v in samples.items()}


def _fill(row: dict, times: dict, counts, defaults: dict) -> None:
    """Per-count times and ratios, each library at its best count, the defaults, and the 1 → N speed-ups.

    ``unrolled_s`` / ``torch_s`` / ``ratio``: each at its faster count (best against best);
    ``ratio_default``: each at its own default count; ``ratio_{n}t``: both at n threads."""
    N = max(counts)
    for lib in ("unrolled", "torch"):
        mine = {n: t for (name, n), t in times.items() if name == lib}
        if not mine:
            continue
        for n, t in mine.items():
            row[f"{lib}_{n}t_s"] = t
        best = min(mine, key=mine.get)
        row[f"{lib}_s"], row[f"{lib}_threads"] = mine[best], best
        row[f"{lib}_speedup"] = mine[1] / mine[N] if 1 in mine and N != 1 else None
        row[f"{lib}_default_s"] = mine.get(defaults.get(lib, N))
    if "torch_s" in row:
        row["ratio"] = row["unrolled_s"] / row["torch_s"]
        for n in counts:
            row[f"ratio_{n}t"] = row[f"unrolled_{n}t_s"] / row[f"torch_{n}t_s"]
        if row["unrolled_default_s"] is not None and row["torch_default_s"] is not None:
            row["ratio_default"] = row["unrolled_default_s"] / row["torch_default_s"]


def run_grid(grid, torch, reps: int, peak: float, log=print, counts=(1,), defaults=None) -> list[dict]:
    """Every row of ``grid``, training step and inference, each library at each thread count of ``counts``
    (interleaved, wall clock); ``defaults``: {library: its default thread count}, else the largest count."""
    counts = tuple(sorted(set(counts)))
    defaults = defaults or {}
    rows = []
    for cfg in grid:
        for train in (True, False):
            times = time_contenders(step_fns(cfg, torch, train), torch, counts, reps)
            flops = cfg.forward_flops() * (3 if train else 1)
            row = {"config": cfg.name, **asdict(cfg), "mode": "train" if train else "infer", "flops": flops}
            _fill(row, times, counts, defaults)
            row["unrolled_gflops"] = flops / row["unrolled_s"] / 1e9
            row["unrolled_peak_frac"] = row["unrolled_gflops"] / peak
            if "torch_s" in row:
                row["torch_gflops"] = flops / row["torch_s"] / 1e9
                row["torch_peak_frac"] = row["torch_gflops"] / peak
            rows.append(row)
            log(_fmt_row(row, counts))
    return rows


def _fmt_row(row: dict, counts) -> str:
    s = f"  {row['config']:<42} {row['mode']:<5}"
    for lib in ("unrolled", "torch"):
        for n in counts:
            if f"{lib}_{n}t_s" in row:
                s += f" {lib} {n}t {row[f'{lib}_{n}t_s'] * 1e3:8.2f} ms"
    if "ratio" in row:
        s += f"  best/best {row['ratio']:.2f}"
    if row.get("ratio_default") is not None:
        s += f"  default/default {row['ratio_default']:.2f}"
    return s


def run_streaming(torch, reps: int, hs=STREAM_H, log=print, counts=(1,), defaults=None) -> list[dict]:
    """One ``step()`` at B = 1 (I = H) against torch.nn.LSTMCell / GRUCell / RNNCell under no_grad, each
    library at each thread count of ``counts`` (a step never splits: the counts should not matter)."""
    import unrolled

    counts = tuple(sorted(set(counts)))
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
            times = time_contenders(fns, torch, counts, reps, warmup=1, inner=inner)
            row = {"cell": cell, "H": H, "B": 1}
            _fill(row, times, counts, defaults or {})
            rows.append(row)
            r = f"  ratio 1t {row['ratio_1t']:.2f} best/best {row['ratio']:.2f}" if "ratio" in row else ""
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
    """Geometric means and worst rows per mode: best against best (``ratio``), defaults against defaults
    (``ratio_default``) and at each equal thread count (``ratio_{n}t``); the rows where unrolled at N
    threads is slower than at one; the 1 → N speed-ups of the LSTM rows with B ≥ 16."""
    out = {}
    keys = sorted({k for r in rows for k in r if k.startswith("ratio")})
    for mode in ("train", "infer"):
        mine = [r for r in rows if r["mode"] == mode]
        for key in keys:
            ratios = [r[key] for r in mine if r.get(key) is not None]
            if ratios:  # train_geomean_ratio, train_default_geomean_ratio, train_1t_geomean_ratio, ...
                out[f"{mode}{key.removeprefix('ratio')}_geomean_ratio"] = geomean(ratios)
                out[f"{mode}{key.removeprefix('ratio')}_worst_ratio"] = max(ratios)
        slower = [
            r["config"] for r in mine if r.get("unrolled_speedup") is not None and r["unrolled_speedup"] < 1
        ]
        out[f"{mode}_unrolled_slower_at_N"] = slower
        lstm = [r for r in mine if r["cell"] == "lstm" and r["B"] >= 16 and r.get("unrolled_speedup")]
        if lstm:
            out[f"{mode}_lstm_b16_speedup"] = {
                r["config"]: [r["unrolled_speedup"], r.get("torch_speedup")] for r in lstm
            }
    for key in ("ratio", "ratio_1t", "ratio_default"):
        s = [r[key] for r in streaming if r.get(key) is not None]
        if s:
            out[f"stream{key.removeprefix('ratio')}_geomean_ratio"] = geomean(s)
            out[f"stream{key.removeprefix('ratio')}_worst_ratio"] = max(s)
    big = [r for r in rows if r["H"] >= 512]
    if big:
        out["large_min_peak_frac"] = {r["mode"]: r["unrolled_peak_frac"] for r in big}
    return out


def thread_counts(threads: int | None) -> tuple[int, ...]:
    """The thread counts a run compares: 1, every core this process may use, and ``threads`` if given."""
    from unrolled.threads import available_cores

    return tuple(sorted({1, available_cores(), *(() if threads is None else (int(threads),))}))


def run_suite(
    quick: bool = False,
    threads: int | None = None,
    with_torch: bool = True,
    memory_too: bool = True,
    log=print,
    scaling_too: bool = True,
) -> dict:
    """Run everything and return the results as a JSON-ready dict: the grid and the streaming steps with
    each library at 1 thread and at every core (and at ``threads``, if given), side by side, wall clock;
    the scaling grid and peak memory at each library's default."""
    import unrolled
    from unrolled import kernels
    from unrolled import threads as unrolled_threads

    torch = None
    if with_torch:
        try:
            import torch
        except ImportError:
            log(f"torch is not installed: timing unrolled alone ({install_hint('torch', 'torch==2.13.0')})")
    reps = 5 if quick else 9
    started, load_start = time.time(), load_average()
    unrolled_threads.set_threads(None)
    defaults = {"unrolled": unrolled_threads.get_threads()}  # each library as a user meets it
    if torch is not None:
        defaults["torch"] = torch.get_num_threads()  # before anything here sets it
    counts = tuple(sorted({*thread_counts(threads), *defaults.values()}))
    set_clock("wall")
    N = max(counts)
    threads_set = set_threads(N, torch)
    log(f"threads {counts}, defaults {defaults}; clock wall; unrolled path: {kernels.describe()}")
    peak = matmul_peak(torch, n=512 if quick else 1024, reps=reps)
    log(f"float32 matrix-product peak ({N} threads): {peak['peak_gflops']:.1f} GFLOP/s {peak}")
    rows = run_grid(QUICK_GRID if quick else GRID, torch, reps, peak["peak_gflops"], log, counts, defaults)
    streaming = run_streaming(torch, reps, STREAM_H[:2] if quick else STREAM_H, log, counts, defaults)
    set_threads(None, torch)
    if torch is not None:
        torch.set_num_threads(defaults["torch"])
    scaling = run_scaling(torch, max(3, reps - 4), quick, log=log) if scaling_too else []
    mem = []
    if memory_too:
        for cfg in MEMORY_GRID[:1] if quick else MEMORY_GRID:
            mem.append(memory.compare(cfg, N, with_torch=torch is not None))
            log(f"  memory {mem[-1]}")
    return {
        "machine": {
            "cpu": cpu_model(),
            "logical_cpus": __import__("os").cpu_count(),
            "available_cores": unrolled_threads.available_cores(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__ if torch is not None else None,
            "threads": threads_set,
            "thread_counts": list(counts),
            "default_threads": defaults,
            "load_average_start": load_start,
        },
        "unrolled": {"version": unrolled.__version__, "path": kernels.describe()},
        "quick": quick,
        "reps": reps,
        "clock": "wall",
        "matmul_peak": peak,
        "rows": rows,
        "streaming": streaming,
        "scaling": scaling,
        "memory": mem,
        "summary": summarize(rows, streaming),
        "seconds": round(time.time() - started, 1),
        "samples_retaken": timing.retaken,  # taken again: other processes were busy (see timing.interleaved)
        "load_average_end": load_average(),
    }
