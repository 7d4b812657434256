"""Where a B = 1 forward's time goes, and the fixed cost of a call.

PYTHONPATH=src python benchmarks/inference_overhead.py LABEL   (runs on main too: there the training forward)

CPU time of the calling thread, µs, median of 9 × n calls, one thread: the whole call, the recurrent walks,
the input projections and oneDNN's packing of W_hh, each timed alone with the same kernels; the rest is
Python (checks, plan lookups, allocations, dispatch). Then the fixed cost: a whole forward over T = 1.
"""

from __future__ import annotations

import inspect
import sys
import time

import numpy as np

import unrolled
from unrolled import kernels, threads
from unrolled.cells.bulk import project_inputs
from unrolled.kernels import _common

INFER = "need_grad" in inspect.signature(unrolled.LSTM.forward).parameters  # False on main
P4 = ((0.5, 0.5, 1.0, 0.5), (0.5, 0.5, 0.0, 0.5))


def med(f, n: int) -> float:
    for _ in range(max(3, n // 10)):
        f()
    ts = []
    for _ in range(9):
        a = time.thread_time()
        for _ in range(n):
            f()
        ts.append((time.thread_time() - a) / n)
    return sorted(ts)[4] * 1e6


def call(layer, x):
    return lambda: layer(x, need_grad=False) if INFER else layer(x)


def layer_parts(cell, p: dict, inp: np.ndarray, n: int) -> tuple[float, float, float, np.ndarray]:
    """(walk, projection, packing) µs of one layer, and its outputs (the next layer's input)."""
    T, B, _ = inp.shape
    H = p["W_hh"].shape[1]
    G = cell.gates * H
    walks = kernels.walks_for(B, cell.gates, H)
    W = walks.forward_weights(p["W_hh"], B)
    pack = med(lambda: walks.forward_weights(p["W_hh"], B), n)
    mm = kernels.bulk_matmul(np.float32)
    g = np.empty((T, B, G), np.float32)
    if INFER:
        proj = med(lambda: _common.project_into(inp, p["W_xh"], g, mm), n)
    else:
        proj = med(lambda: project_inputs(inp, p["W_xh"], None, mm), n)
    hs = np.zeros((T + 1, B, H), np.float32)
    valid, rec = np.ones((T, B), np.float32), np.empty((B, G), np.float32)
    if cell.gates == 4:
        sc, of = _common.gate_affine(P4, H, np.float32)
        if INFER:
            cs, tc = np.zeros((2, B, H), np.float32), np.empty((B, H), np.float32)
            args = (0, g, W, p["b_h"], sc, of, hs, cs, tc, valid, rec)
            walk = med(lambda: walks.lstm_infer_seq(*args), n)
        else:
            cs, tc = np.zeros((T + 1, B, H), np.float32), np.empty((T, B, H), np.float32)
            args = (g, W, p["b_h"], sc, of, hs, cs, tc, valid, rec)
            walk = med(lambda: walks.lstm_forward_seq(*args), n)
    else:
        if INFER:
            args = (0, g, W, p["b_h"], p["b_hn"], hs, np.empty((B, H), np.float32), valid, rec)
            walk = med(lambda: walks.gru_infer_seq(*args), n)
        else:
            args = (g, W, p["b_h"], p["b_hn"], hs, np.empty((T, B, H), np.float32), valid, rec)
            walk = med(lambda: walks.gru_forward_seq(*args), n)
    return walk, proj, pack, np.ascontiguousarray(hs[1:])


def main(label: str) -> None:
    threads.set_threads(1)
    rows = [
        ("LSTM T100 B1 I64 H256", unrolled.LSTM(64, 256, seed=0), (100, 1, 64)),
        ("GRU 2L T100 B1 I40 H64", unrolled.GRU(40, 64, num_layers=2, seed=0), (100, 1, 40)),
    ]
    for name, layer, shape in rows:
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        n = 30 if layer.hidden_size > 100 else 200
        total = med(call(layer, x), n)
        cell = kernels.pick(layer.cell, np.float32)
        inp, walk, proj, pack = x, 0.0, 0.0, 0.0
        for layer_index in range(layer.num_layers):
            w, pr, pk, inp = layer_parts(cell, layer.direction_params(layer_index, 0), inp, n)
            walk, proj, pack = walk + w, proj + pr, pack + pk
        rest = total - walk - proj - pack
        print(
            f"{label} {name}: call {total:.0f} = walk {walk:.0f} + projection {proj:.1f} + packing W_hh "
            f"{pack:.1f} + the rest {rest:.1f} us; fixed cost (T = 1) {med(call(layer, x[:1]), 1000):.1f} us",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
