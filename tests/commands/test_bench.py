"""The benchmark suite's plumbing (not its timings): FLOP counts, one tiny row against torch, the Markdown
rendering, the CLI's user errors. No assertion here depends on how fast anything ran."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unrolled import threads
from unrolled.bench.report import render_markdown
from unrolled.bench.suite import Config, _fill, geomean, run_grid, run_streaming, summarize, thread_counts
from unrolled.bench.timing import interleaved, matmul_peak
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


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_each_contender_comes_right_after_each_other_equally_often(n):
    from collections import Counter

    from unrolled.bench.timing import balanced_orders

    orders = balanced_orders(n)
    assert all(sorted(o) == list(range(n)) for o in orders)
    after = Counter((o[i - 1], o[i]) for o in orders for i in range(1, n))
    assert len(after) == n * (n - 1) and len(set(after.values())) == 1


def test_four_contenders_are_timed_in_the_balanced_orders():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abcd"}
    interleaved(fns, reps=4, warmup=0)
    # b after a, c, d once each, and after itself (the untimed call that starts its order); so every one
    assert "".join(calls) == "aabdc" + "bbcad" + "ccdba" + "ddacb"


def test_a_sample_taken_while_others_kept_a_core_busy_is_taken_again(monkeypatch):
    from unrolled.bench import timing

    busy = iter([True, True, False, True, True, True, True])
    monkeypatch.setattr(timing, "_others_busy", lambda ticks, seconds: next(busy))
    calls = []
    s = interleaved({"a": lambda: calls.append("a")}, reps=2, warmup=0, retake=3)
    assert len(s["a"]) == 2
    assert len(calls) == 3 + 4  # first sample: busy, busy, quiet; second: busy four times, the last kept


def test_geomean():
    assert geomean([1.0, 4.0]) == pytest.approx(2.0)
    assert geomean([]) is None


def test_one_tiny_row_and_streaming_step_against_torch_render_to_markdown():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        _tiny_row_and_streaming(torch)
    finally:  # the thread counts are process-wide: leave them as the other tests found them
        threads.set_threads(None)
        torch.set_num_threads(before)


def _tiny_row_and_streaming(torch):
    peak = matmul_peak(torch, n=64, reps=1)
    counts, defaults = (1, 2), {"unrolled": 2, "torch": 1}
    rows = run_grid(
        [Config("lstm", 3, 2, 4, 5)], torch, 1, peak["peak_gflops"], lambda s: None, counts, defaults
    )
    assert [r["mode"] for r in rows] == ["train", "infer"]
    for r in rows:
        for lib in ("unrolled", "torch"):
            assert r[f"{lib}_1t_s"] > 0 and r[f"{lib}_2t_s"] > 0
            assert r[f"{lib}_s"] == min(r[f"{lib}_1t_s"], r[f"{lib}_2t_s"])  # each at its faster count
            assert r[f"{lib}_speedup"] == r[f"{lib}_1t_s"] / r[f"{lib}_2t_s"]
        assert r["ratio"] == r["unrolled_s"] / r["torch_s"]
        assert r["ratio_default"] == r["unrolled_2t_s"] / r["torch_1t_s"]
        assert r["ratio_1t"] == r["unrolled_1t_s"] / r["torch_1t_s"]
    stream = run_streaming(torch, 1, (4,), lambda s: None, counts, defaults)
    assert {r["cell"] for r in stream} == {"lstm", "gru", "rnn"}
    res = {
        "machine": {"cpu": "Test CPU", "logical_cpus": 2, "numpy": np.__version__, "torch": torch.__version__,
                    "threads": {"numpy_blas": 1, "torch": 1}, "load_average_start": None,
                    "thread_counts": list(counts), "default_threads": defaults},
        "unrolled": {"path": "fast"}, "reps": 1, "clock": "wall", "load_average_end": None,
        "matmul_peak": peak, "rows": rows, "streaming": stream, "scaling": [], "memory": [],
        "summary": summarize(rows, stream),
    }  # fmt: skip
    json.dumps(res)  # JSON-ready
    md = render_markdown(res)
    assert (
        "Test CPU" in md and "| LSTM L1 T=3 B=2 I=4 H=5 | train |" in md and "defaults against defaults" in md
    )
    assert "unrolled 1t ms | unrolled 2t ms | torch 1t ms | torch 2t ms" in md


def test_summary_names_rows_slower_at_more_threads_and_the_lstm_speedups():
    def row(cell, B, u1, u2, t1, t2):
        r = {"config": f"{cell} B={B}", "cell": cell, "B": B, "H": 8, "mode": "train"}
        _fill(r, {("unrolled", 1): u1, ("unrolled", 2): u2, ("torch", 1): t1, ("torch", 2): t2}, (1, 2), {})
        return r

    rows = [row("lstm", 32, 10.0, 5.0, 12.0, 6.0), row("gru", 32, 4.0, 5.0, 8.0, 2.0)]
    s = summarize(rows, [])
    assert s["train_unrolled_slower_at_N"] == ["gru B=32"]
    assert s["train_lstm_b16_speedup"] == {"lstm B=32": [2.0, 2.0]}
    assert s["train_geomean_ratio"] == pytest.approx(geomean([5.0 / 6.0, 4.0 / 2.0]))  # best against best
    assert s["train_default_geomean_ratio"] == pytest.approx(geomean([5.0 / 6.0, 5.0 / 2.0]))  # both at 2
    assert s["train_1t_worst_ratio"] == pytest.approx(10.0 / 12.0)


def test_thread_counts_compare_one_thread_with_every_core():
    assert thread_counts(None) == tuple(sorted({1, threads.available_cores()}))
    assert 3 in thread_counts(3) and 1 in thread_counts(3)


def test_bench_cli_rejects_bad_options_in_one_line(capsys, tmp_path):
    assert main(["bench", "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
    assert main(["bench", "--json", str(tmp_path / "missing" / "out.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("unrolled: error:") and "does not exist" in err and "\n" not in err


def test_bench_inference_times_each_runtime_at_each_thread_count_on_a_tiny_row(capsys, tmp_path, monkeypatch):
    """``unrolled bench --inference`` on a one-row grid: unrolled, onnxruntime (on the exported graph) and
    torch each at 1 thread and at every core, their outputs checked against each other, a ratio per row."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from unrolled.bench import inference

    monkeypatch.setattr(inference, "INFER_GRID", [Config("gru", 5, 1, 3, 4, layers=2)])
    out = tmp_path / "inf.json"
    try:
        assert main(["bench", "--inference", "--quick", "--json", str(out)]) == 0
    finally:
        threads.set_threads(None)
    res = json.loads(out.read_text())
    (row,) = res["rows"]
    counts = thread_counts(None)
    for lib in ("unrolled", "onnxruntime", "torch"):
        assert all(row[f"{lib}_{n}t_s"] > 0 for n in counts)
    assert row["max_abs_diff"] < 1e-5  # the same weights in all three
    assert row["ratio"] == pytest.approx(row["unrolled_s"] / min(row["onnxruntime_s"], row["torch_s"]))
    assert res["geomean_ratio"] == pytest.approx(row["ratio"])
    printed = capsys.readouterr().out
    assert "| GRU L2 T=5 B=1 I=3 H=4 |" in printed and "geometric mean" in printed


def test_bench_threads_help_says_what_the_default_does(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default 1)" not in text and "1 thread and at every core" in text
