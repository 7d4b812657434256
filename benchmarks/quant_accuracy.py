"""What quantising costs in accuracy: a char-LM's held-out bits per character and a forecaster's test
MAE, float32 against int8 and bf16 (:func:`unrolled.quantize`), same model, same data.

    python benchmarks/quant_accuracy.py --charlm RUN --text heldout.txt    # `unrolled train charlm`
    python benchmarks/quant_accuracy.py --forecast RUN                     # `unrolled train forecast`

The char-LM is scored on a text file (give it the held-out end of the training text: `train charlm`
validates on its last --val-fraction); the forecaster on its own test split, the rows it was scored on
when it was trained (every test origin, the whole horizon).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import unrolled


def charlm_rows(run: str, text: str) -> None:
    from unrolled.apps import charlm

    model, vocab, _ = charlm.load(run)
    corpus = charlm.load_corpus([text], vocab, "skip")
    base = None
    for kind in ("float32", "int8", "bf16"):
        m = model if kind == "float32" else unrolled.quantize(model, kind)
        t = time.perf_counter()
        bpc = charlm.bits(charlm.evaluate(m, corpus.ids))
        base = bpc if base is None else base
        print(
            f"charlm {kind:<7} {bpc:.4f} bits/char  (Δ {bpc - base:+.4f})  over {len(corpus.ids):,} chars"
            f"  {time.perf_counter() - t:.1f} s",
            flush=True,
        )


def forecast_rows(run: str) -> None:
    from unrolled.apps import forecast

    fc, cfg, _ = forecast.load(run)
    cfg = dataclasses.replace(cfg, arima=False)
    ts = cfg.load_series()
    prep = forecast.prepare_for(cfg, ts)
    period = cfg.period or 1
    base = None
    float_model = fc.model
    for kind in ("float32", "int8", "bf16"):
        fc.model = float_model if kind == "float32" else unrolled.quantize(float_model, kind)
        err = forecast.evaluate(fc, prep, cfg, period)["network"]
        base = err["MAE"] if base is None else base
        print(
            f"forecast {kind:<7} test MAE {err['MAE']:.4f} (Δ {err['MAE'] - base:+.4f})"
            f"  RMSE {err['RMSE']:.4f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--charlm", metavar="RUN")
    ap.add_argument("--text", metavar="FILE")
    ap.add_argument("--forecast", metavar="RUN")
    args = ap.parse_args()
    if args.charlm:
        charlm_rows(args.charlm, args.text)
    if args.forecast:
        forecast_rows(args.forecast)


if __name__ == "__main__":
    main()
