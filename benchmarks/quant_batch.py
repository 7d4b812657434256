"""Where quantised weights pay: the small-weight kernels against the float32 path on the same Ŵ, by batch.

For LSTM and GRU at H = 128, 256, 512 (I = H, one layer, T = 50) and B = 1, 2, 3, 4, 6, 8: the float32
forward (``need_grad=False``) and 20 ``step()`` calls of the float layer, then the same through the int8 and
bf16 kernels called directly (``QuantizedWeights.forward`` / ``.step``, whatever the rule says), as ratios
to float32 (below 1: the small weights are faster), and what the quantised layer runs by its rule
(``QuantizedWeights.pays``). One thread, wall clock, samples interleaved, each a burst of
10 calls (``--inner``: one model run repeatedly, its weights warm in cache), medians of 5 (``--reps``). Run
it with the OpenBLAS variables of the test machine unset::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/quant_batch.py [--json F]
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hs", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--bs", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument(
        "--inner", type=int, default=10, help="calls per sample: a warm burst, as a user runs one model"
    )
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()

    import unrolled
    from unrolled.bench.timing import interleaved, median

    unrolled.threads.set_threads(1)
    rows = []
    for cell in (unrolled.LSTM, unrolled.GRU):
        for H in args.hs:
            layer = cell(H, H, seed=0).eval()
            qs = {k: unrolled.quantize(layer, k) for k in ("int8", "bf16")}
            for B in args.bs:
                x = np.random.default_rng(0).standard_normal((50, B, H)).astype(np.float32)
                zeros = np.zeros((1, B, H), np.float32)
                s0 = (zeros, zeros) if cell is unrolled.LSTM else (zeros,)
                row = {"cell": cell.__name__, "H": H, "B": B}
                fns = {
                    "float32_forward": lambda m=layer, x=x: m.forward(x, need_grad=False),
                    "float32_step20": lambda m=layer, x=x: [m.step(x[0]) for _ in range(20)],
                }
                for k, q in qs.items():
                    w = q.quantized
                    fns[f"{k}_forward"] = lambda q=q, w=w, x=x, s0=s0: w.forward(q, x, s0)
                    fns[f"{k}_step20"] = lambda q=q, w=w, x=x: [w.step(q, x[0], None) for _ in range(20)]
                ms = {
                    k: median(v) * 1e3
                    for k, v in interleaved(fns, args.reps, warmup=2, inner=args.inner).items()
                }
                row["float32_forward_ms"] = ms["float32_forward"]
                row["float32_step20_ms"] = ms["float32_step20"]
                for k, q in qs.items():
                    row[f"{k}_forward_ratio"] = ms[f"{k}_forward"] / ms["float32_forward"]
                    row[f"{k}_step_ratio"] = ms[f"{k}_step20"] / ms["float32_step20"]
                    row[f"{k}_forward_reads_small"] = q.quantized.pays(B, H, stepping=False)
                    row[f"{k}_step_reads_small"] = q.quantized.pays(B, H, stepping=True)
                rows.append(row)

                def mark(k, what, row=row):
                    return "*" if row[f"{k}_{what}_reads_small"] else " "

                print(
                    f"{cell.__name__:<4} H={H:<4} B={B}: float32 forward {row['float32_forward_ms']:6.2f} ms"
                    f" step {row['float32_step20_ms'] / 20 * 1e3:6.1f} us | small/float32 forward"
                    f" int8 {row['int8_forward_ratio']:.2f}{mark('int8', 'forward')}"
                    f" bf16 {row['bf16_forward_ratio']:.2f}{mark('bf16', 'forward')}"
                    f"  step int8 {row['int8_step_ratio']:.2f}{mark('int8', 'step')}"
                    f" bf16 {row['bf16_step_ratio']:.2f}{mark('bf16', 'step')}",
                    flush=True,
                )
    print("* = the quantised layer reads the small weights there (QuantizedWeights.pays)")
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
