"""The inference benchmark: a forward pass of unrolled (its inference path, ``need_grad=False``) against
onnxruntime running the graph :func:`unrolled.interop.onnx.to_onnx` writes for the same layer (same weights)
and torch.nn (``eval()``, ``inference_mode``), side by side in one process, float32, wall clock, medians.

Each library runs at 1 thread and at every core (onnxruntime: a session per count, ``intra_op_num_threads``;
torch: ``set_num_threads``; unrolled: :func:`unrolled.threads.set_threads`); a row's ratio is unrolled at its
best count over the best of the other two at theirs. onnxruntime and torch are optional: a row times what
is installed.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import numpy as np

from unrolled.bench.suite import Config, geomean, make_pair, thread_counts
from unrolled.bench.timing import cpu_model, interleaved, load_average, median, set_clock

# The inference grid: B = 1 and batched, one and two layers, LSTM and GRU.
INFER_GRID = [
    Config("lstm", 100, 1, 64, 256),
    Config("lstm", 100, 32, 64, 256, layers=2),
    Config("gru", 200, 8, 32, 128),
    Config("lstm", 50, 64, 256, 512),
    Config("gru", 100, 1, 40, 64, layers=2),
]
LIBS = ("unrolled", "onnxruntime", "torch")


def _optional(name: str):
    try:
        return __import__(name)
    except ImportError:
        return None


def contenders(cfg: Config, counts, torch=None, ort=None) -> tuple[dict, dict]:
    """({"lib@n": forward callable}, {"lib@n": set-up run before each of its samples}) for one row."""
    from unrolled import threads

    layer, module = make_pair(cfg, torch)
    layer.eval()
    x = np.random.default_rng(1).standard_normal((cfg.T, cfg.B, cfg.I), dtype=np.float32)
    fns: dict[str, Callable[[], object]] = {}
    before: dict[str, Callable[[], object]] = {}
    for n in counts:
        fns[f"unrolled@{n}"] = lambda: layer.forward(x, need_grad=False)
        before[f"unrolled@{n}"] = lambda n=n: threads.set_threads(n)
    if ort is not None:
        from unrolled.interop.onnx import to_onnx

        graph = to_onnx(layer, lengths=False).SerializeToString()
        for n in counts:
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = n, 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            sess = ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            fns[f"onnxruntime@{n}"] = lambda sess=sess, name=name: sess.run(None, {name: x})
    if module is not None:
        module.eval()
        xt = torch.from_numpy(x)

        def theirs():
            with torch.inference_mode():
                module(xt)

        for n in counts:
            fns[f"torch@{n}"] = theirs
            before[f"torch@{n}"] = lambda n=n: torch.set_num_threads(n)
    return fns, before


def check_outputs(cfg: Config, torch=None, ort=None) -> float:
    """The largest |difference| between unrolled's inference output and each peer's (same weights)."""
    layer, module = make_pair(cfg, torch)
    x = np.random.default_rng(1).standard_normal((cfg.T, cfg.B, cfg.I), dtype=np.float32)
    ours = layer.forward(x, need_grad=False)[0]
    worst = 0.0
    if ort is not None:
        from unrolled.interop.onnx import to_onnx

        sess = ort.InferenceSession(to_onnx(layer, lengths=False).SerializeToString())
        y = sess.run(None, {sess.get_inputs()[0].name: x})[0]  # (T, D, B, H) for one layer
        worst = max(worst, float(np.abs(_as_out(y, ours.shape) - ours).max()))
    if module is not None:
        with torch.inference_mode():
            y = module(torch.from_numpy(x))[0].numpy()
        worst = max(worst, float(np.abs(y - ours).max()))
    return worst


def _as_out(y: np.ndarray, shape) -> np.ndarray:
    """An exported graph's first output as (T, B, D·H)."""
    if y.shape == tuple(shape):
        return y
    T, D, B, H = y.shape
    return y.transpose(0, 2, 1, 3).reshape(T, B, D * H)


def run_inference(
    quick: bool = False,
    threads: int | None = None,
    log=print,
    grid=None,
    reps: int | None = None,
    with_torch: bool = True,
) -> dict:
    """Every row of the grid (``INFER_GRID``), each library at each thread count, interleaved. Returns a
    JSON-ready dict: per row the medians (``{lib}_{n}t_s``), each library's best, the ratio of unrolled's
    best to the best peer's; the geometric mean and worst of those ratios."""
    from unrolled import kernels
    from unrolled import threads as unrolled_threads

    torch, ort = _optional("torch") if with_torch else None, _optional("onnxruntime")
    if (with_torch and torch is None) or ort is None:
        missing = " and ".join(
            n for n, m in (("torch", torch if with_torch else 0), ("onnxruntime", ort)) if m is None
        )
        log(f"{missing} not installed: timing the others only (pip install 'unrolled[torch,onnx]')")
    reps = reps or (5 if quick else 11)
    counts = thread_counts(threads)
    torch_default = torch.get_num_threads() if torch is not None else None
    set_clock("wall")
    started, load_start = time.time(), load_average()
    log(f"inference: threads {counts}; clock wall; unrolled path: {kernels.describe()}")
    rows = []
    for cfg in grid or INFER_GRID:
        fns, before = contenders(cfg, counts, torch, ort)
        inner = max(1, int(2e-3 / max(cfg.forward_flops() / 20e9, 1e-6)))  # ~2 ms per sample at least
        samples = interleaved(fns, reps, warmup=2, inner=min(inner, 50), before=before, retake=3)
        row: dict = {"config": cfg.name, "cell": cfg.cell, "T": cfg.T, "B": cfg.B, "I": cfg.I, "H": cfg.H}
        row["layers"] = cfg.layers
        for key, v in samples.items():
            lib, n = key.split("@")
            row[f"{lib}_{n}t_s"] = median(v)
        for lib in LIBS:
            mine = {n: row[f"{lib}_{n}t_s"] for n in counts if f"{lib}_{n}t_s" in row}
            if mine:
                best = min(mine, key=mine.get)
                row[f"{lib}_s"], row[f"{lib}_threads"] = mine[best], best
        peers = [row[f"{lib}_s"] for lib in LIBS[1:] if f"{lib}_s" in row]
        if peers:
            row["best_peer_s"] = min(peers)
            row["ratio"] = row["unrolled_s"] / row["best_peer_s"]
        row["max_abs_diff"] = check_outputs(cfg, torch, ort)
        rows.append(row)
        log(format_row(row, counts))
    unrolled_threads.set_threads(None)
    if torch is not None:
        torch.set_num_threads(torch_default)
    ratios = [r["ratio"] for r in rows if "ratio" in r]
    return {
        "machine": {
            "cpu": cpu_model(),
            "platform": platform.platform(),
            "numpy": np.__version__,
            "torch": getattr(torch, "__version__", None),
            "onnxruntime": getattr(ort, "__version__", None),
            "thread_counts": list(counts),
            "load_average_start": load_start,
        },
        "unrolled_path": kernels.describe(),
        "reps": reps,
        "rows": rows,
        "geomean_ratio": geomean(ratios),
        "worst_ratio": max(ratios) if ratios else None,
        "seconds": round(time.time() - started, 1),
        "load_average_end": load_average(),
    }


def format_row(row: dict, counts) -> str:
    s = f"  {row['config']:<34}"
    for lib in LIBS:
        ts = [f"{row[f'{lib}_{n}t_s'] * 1e3:.3f}" for n in counts if f"{lib}_{n}t_s" in row]
        if ts:
            s += f" {lib} {' / '.join(ts)} ms"
    if "ratio" in row:
        s += f"  ratio {row['ratio']:.2f}"
    return s


def render_markdown(res: dict) -> str:
    """The table of one run: ms per forward at each thread count, and unrolled's best over the best peer's."""
    counts = res["machine"]["thread_counts"]
    cn = " / ".join(str(n) for n in counts)
    head = f"| row (forward) | onnxruntime {cn} thr | torch {cn} | unrolled {cn} | ratio |"
    lines = [head, "|---|---|---|---|---:|"]
    for r in res["rows"]:
        cells = []
        for lib in ("onnxruntime", "torch", "unrolled"):
            ts = [f"{r[f'{lib}_{n}t_s'] * 1e3:.3g}" for n in counts if f"{lib}_{n}t_s" in r]
            cells.append(" / ".join(ts) + (" ms" if ts else "—"))
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "—"
        lines.append(f"| {r['config']} | " + " | ".join(cells) + f" | {ratio} |")
    if res.get("geomean_ratio") is not None:
        g, w = res["geomean_ratio"], res["worst_ratio"]
        lines.append(f"| **geometric mean** | | | | **{g:.2f}** (worst {w:.2f}) |")
    lines.append("")
    lines.append(
        f"Ratio: unrolled at its best thread count over the best of onnxruntime and torch at theirs; "
        f"{res['reps']} interleaved samples each, medians, wall clock. Load average "
        f"{res['machine']['load_average_start']} → {res['load_average_end']}. "
        f"unrolled: {res['unrolled_path']}."
    )
    return "\n".join(lines)
