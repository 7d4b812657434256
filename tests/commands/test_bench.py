"""The benchmark suite's plumbing (not its timings): FLOP counts, one tiny row against torch, the Markdown
rendering, the CLI's user errors. No assertion here depends on how fast anything ran."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unrolled.bench.report import render_markdown
from unrolled.bench.suite import Config, geomean, run_grid, run_streaming, summarize
from unrolled.bench.timing import interleaved, matmul_peak, openblas_controls, set_threads
from unrolled.commands import main


def test_forward_flops_count_every_layer_and_direction():
    # one LSTM layer: 2·T·B·4H·(I + H); a second bidirectional layer takes 2H inputs
    assert Config("lstm", 10, 2, 3, 5).forward_flops() == 2 * 10 * 2 * 20 * (3 + 5)
    bi = Config("gru", 4, 1, 3, 2, layers=2, bidirectional=True)
    assert bi.forward_flops() == 2 * (2 * 4 * 1 * 6 * (3 + 2)) + 2 * (2 * 4 * 1 * 6 * (4 + 2))


def test_interleaved_alternates_and_returns_every_sample():
    calls = []
    s = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, reps=3, warmup=1)
    assert [len(v) for v in s.values()] == [3, 3]
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then alternating order


def test_geomean():
    assert geomean([1.0, 4.0]) == pytest.approx(2.0)
    assert geomean([]) is None


def test_one_tiny_row_and_streaming_step_against_torch_render_to_markdown():
    torch = pytest.importorskip("torch")
    before = (openblas_controls()[1](), torch.get_num_threads()) if openblas_controls()[1] else None
    set_threads(1, torch)
    try:
        _tiny_row_and_streaming(torch)
    finally:
        if before:  # the thread counts are process-wide: leave them as the other tests found them
            set_threads(before[0])
            torch.set_num_threads(before[1])


def _tiny_row_and_streaming(torch):
    peak = matmul_peak(torch, n=64, reps=1)
    rows = run_grid([Config("lstm", 3, 2, 4, 5)], torch, reps=1, peak=peak["peak_gflops"], log=lambda s: None)
    assert [r["mode"] for r in rows] == ["train", "infer"]
    for r in rows:
        assert r["unrolled_s"] > 0 and r["torch_s"] > 0 and r["ratio"] == r["unrolled_s"] / r["torch_s"]
    stream = run_streaming(torch, reps=1, hs=(4,), log=lambda s: None)
    assert {r["cell"] for r in stream} == {"lstm", "gru", "rnn"}
    res = {
        "machine": {"cpu": "Test CPU", "logical_cpus": 2, "numpy": np.__version__, "torch": torch.__version__,
                    "threads": {"numpy_blas": 1, "torch": 1}, "load_average_start": None},
        "unrolled": {"path": "fast"}, "reps": 1, "clock": "thread_cpu", "load_average_end": None,
        "matmul_peak": peak, "rows": rows, "streaming": stream, "scaling": [], "memory": [],
        "summary": summarize(rows, stream),
    }  # fmt: skip
    json.dumps(res)  # JSON-ready
    md = render_markdown(res)
    assert "Test CPU" in md and "| LSTM L1 T=3 B=2 I=4 H=5 | train |" in md and "Geometric mean" in md


def test_bench_cli_rejects_bad_options_in_one_line(capsys, tmp_path):
    assert main(["bench", "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
    assert main(["bench", "--json", str(tmp_path / "missing" / "out.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("unrolled: error:") and "does not exist" in err and "\n" not in err
