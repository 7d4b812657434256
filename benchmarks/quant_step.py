"""Streaming ``step()`` at B = 1 with quantised weights, side by side with torch in one process.

For LSTM and GRU at H = 128 and 512 (I = H, one layer), one call of ``layer.step(x, state)`` in float32,
int8 and bf16 (:func:`unrolled.quantize`) against ``torch.nn.LSTMCell`` / ``GRUCell`` under no_grad, all
at one thread; wall clock, samples interleaved, medians (and minima: the samples least disturbed
by other processes on a shared machine); ratios to torch. Also the error of each
quantised step against the float32 step (max |Δh| over the max |h|).

Run it with the OpenBLAS variables of the test machine unset, as a user's machine has them::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/quant_step.py [--reps 31] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=31)
    ap.add_argument("--hs", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()

    import torch

    import unrolled
    from unrolled.bench.timing import interleaved, median, set_threads

    set_threads(1, torch)
    rows = []
    for cell in ("lstm", "gru"):
        for H in args.hs:
            layer = {"lstm": unrolled.LSTM, "gru": unrolled.GRU}[cell](H, H, seed=0).eval()
            x = np.random.default_rng(0).standard_normal((1, H), dtype=np.float32)
            _, state = layer.step(x)  # a non-zero state
            layers = {"float32": layer, **{k: unrolled.quantize(layer, k) for k in ("int8", "bf16")}}
            fns = {k: (lambda m=m, x=x, s=state: m.step(x, s)) for k, m in layers.items()}
            tcell = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[cell](H, H)
            xt, ht = torch.from_numpy(x), torch.zeros(1, H)
            st = (ht, torch.zeros(1, H)) if cell == "lstm" else ht

            def theirs(tcell=tcell, xt=xt, st=st):
                with torch.no_grad():
                    tcell(xt, st)

            fns["torch"] = theirs
            inner = 200 if H <= 128 else 40
            samples = interleaved(fns, args.reps, warmup=3, inner=inner)
            times = {k: median(v) for k, v in samples.items()}
            best = {k: min(v) for k, v in samples.items()}  # least disturbed by other processes
            ref = layer.step(x, state)[0]
            err = {
                k: float(np.abs(layers[k].step(x, state)[0] - ref).max() / np.abs(ref).max())
                for k in ("int8", "bf16")
            }
            row = {"cell": cell, "H": H, **{f"{k}_us": v * 1e6 for k, v in times.items()}}
            row.update({f"{k}_vs_torch": times[k] / times["torch"] for k in layers})
            row.update({f"{k}_min_us": v * 1e6 for k, v in best.items()})
            row.update({f"{k}_vs_torch_min": best[k] / best["torch"] for k in layers})
            row.update({f"{k}_rel_err": e for k, e in err.items()})
            rows.append(row)
            print(
                f"{cell.upper():<4} H={H:<4} "
                + "  ".join(f"{k} {times[k] * 1e6:7.1f} us" for k in fns)
                + "  vs torch: "
                + " ".join(f"{k} {row[f'{k}_vs_torch']:.2f}" for k in layers)
                + f"  rel err int8 {err['int8']:.1e} bf16 {err['bf16']:.1e}"
                + "\n      min: "
                + "  ".join(f"{k} {best[k] * 1e6:7.1f} us" for k in fns)
                + "  vs torch: "
                + " ".join(f"{k} {row[f'{k}_vs_torch_min']:.2f}" for k in layers),
                flush=True,
            )
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
