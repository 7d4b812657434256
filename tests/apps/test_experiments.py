"""The adding and copy-memory experiments: the data are what the papers define, the success criteria
and baselines are right, a tiny grid runs and resumes, and the CLI reports."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from unrolled.apps.experiments import (
    RunConfig,
    adding_batch,
    baseline,
    copy_batch,
    grid,
    parity_batch,
    read_results,
    results_table,
    run_grid,
    run_one,
    solved,
)
from unrolled.commands import main


def test_adding_batch_has_one_marker_in_each_half_and_the_sum_as_target():
    x, y = adding_batch(11, 500, np.random.default_rng(0))
    assert x.shape == (11, 500, 2) and y.shape == (500, 1) and x.dtype == np.float32
    m = x[:, :, 1]
    assert (m.sum(axis=0) == 2).all()
    assert (m[:6].sum(axis=0) == 1).all() and (m[6:].sum(axis=0) == 1).all()
    np.testing.assert_allclose(y[:, 0], (x[:, :, 0] * m).sum(axis=0), rtol=1e-6)
    # The baseline: predicting the mean 1 has MSE Var(U + U) = 1/6.
    _, y_big = adding_batch(10, 200_000, np.random.default_rng(1))
    assert np.mean((y_big - 1.0) ** 2) == pytest.approx(baseline("adding", 10), rel=0.02)


def test_copy_batch_layout_and_baseline():
    T = 7
    x, y = copy_batch(T, 64, np.random.default_rng(0))
    assert x.shape == y.shape == (T + 20, 64)
    assert ((x[:10] >= 1) & (x[:10] <= 8)).all()
    assert (x[10 : 10 + T - 1] == 0).all() and (x[10 + T - 1] == 9).all() and (x[10 + T :] == 0).all()
    assert (y[: T + 10] == 0).all()
    np.testing.assert_array_equal(y[-10:], x[:10])
    assert baseline("copy", T) == pytest.approx(10 * math.log(8) / (T + 20))


def test_parity_batch_targets_are_the_xor_of_all_bits():
    x, y = parity_batch(5, 256, np.random.default_rng(0))
    assert x.shape == (5, 256, 1) and y.shape == (256,)
    assert set(np.unique(x)) <= {0.0, 1.0}
    expected = np.bitwise_xor.reduce(x[:, :, 0].astype(np.int64), axis=0)
    np.testing.assert_array_equal(y, expected)
    assert 0.35 < y.mean() < 0.65  # both classes present
    assert baseline("parity", 5) == pytest.approx(math.log(2))


def test_parity_of_a_few_bits_is_learned():
    rec = run_one(RunConfig(task="parity", cell="gru", T=3, hidden_size=16, max_steps=600, eval_every=50))
    assert rec["solved"], rec["final_metric"]
    assert rec["final_metric"] >= 0.99


def test_success_criteria():
    assert solved("adding", 50, 0.0166, 0.0166) and not solved("adding", 50, 0.0168, 0.0168)
    assert solved("copy", 50, 1.0, 0.99) and not solved("copy", 50, 0.0, 0.98)
    assert solved("parity", 50, 0.1, 0.99) and not solved("parity", 50, 0.1, 0.98)


def test_bad_run_configs_are_refused():
    for kw, msg in [(dict(task="sorting"), "task"), (dict(cell="tcn"), "cell"), (dict(T=0), "T"),
                    (dict(clip=0.0), "clip"), (dict(lr=-1.0), "lr")]:  # fmt: skip
        with pytest.raises(ValueError, match=msg):
            RunConfig(**kw)


def test_a_short_lstm_run_learns_the_adding_problem_at_T_10():
    """Not a benchmark: at T = 10 an LSTM must go well below the trivial baseline within 600 steps."""
    rec = run_one(RunConfig(task="adding", cell="lstm", T=10, max_steps=600, eval_every=100, seed=0, lr=1e-2))
    assert rec["final_loss"] < 0.3 * rec["baseline"], rec["final_loss"]
    assert [h["step"] for h in rec["history"]][:2] == [0, 100]
    assert all(math.isfinite(h["gamma"]) for h in rec["history"])
    json.dumps(rec)  # the record is JSON-able


def test_grid_runs_resumes_and_tables(tmp_path):
    out = tmp_path / "r.jsonl"
    cfgs = grid("copy", [3, 2], ["rnn", "gru"], [1.0, None], [0], max_steps=4, eval_every=2, test_size=8)
    assert [c.T for c in cfgs] == [2, 2, 2, 2, 3, 3, 3, 3]
    assert grid("adding", [5, 4], ["rnn"], [None], [0, 1])[1].T == 5  # seed by seed, short T first
    first = run_grid(cfgs[:3], out)
    assert len(first) == 3
    again = run_grid(cfgs, out)  # the three finished runs are not repeated
    assert len(again) == 5 and len(read_results([out])) == 8
    with out.open("a") as f:
        f.write('{"truncated": ')  # a run killed while writing
    table = results_table(read_results([out]))
    assert table.count("\n") == 2 + 8 - 1  # header, rule, one row per (T, cell, clip)
    assert (
        "| copy | 2 | rnn | off | 4 | 0.01 | 0 |" in table
        and "| copy | 3 | gru | 1.0 | 4 | 0.01 | 0 |" in table
    )
    run_grid(grid("copy", [2], ["rnn"], [None], [0], max_steps=2, eval_every=2, test_size=8), out)
    other = tmp_path / "other.jsonl"  # a second process that ran an overlapping grid
    run_grid(grid("copy", [2], ["rnn"], [None], [0], max_steps=2, eval_every=2, test_size=8), other)
    assert len(read_results([out, other])) == 9
    table = results_table(read_results([out]))  # another budget is another row, not another seed
    assert (
        "| copy | 2 | rnn | off | 2 | 0.01 | 0 |" in table
        and "| copy | 2 | rnn | off | 4 | 0.01 | 0 |" in table
    )


def test_experiment_cli_runs_a_tiny_grid_and_reports(tmp_path, capsys):
    out = tmp_path / "a.jsonl"
    argv = ["experiment", "adding", "--T", "4", "--cells", "rnn", "--clip", "none", "--seeds", "0", "--steps",
            "3", "--eval-every", "3", "--test-size", "8", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert "| adding | 4 | rnn | off | 3 | 0.01 | 0 |" in capsys.readouterr().out
    md = tmp_path / "t.md"
    assert main(["experiment", "report", str(out), "--markdown", str(md)]) == 0
    assert md.read_text().startswith("| task | T |")
    pytest.importorskip("matplotlib")
    png = tmp_path / "f.png"
    assert main(["experiment", "report", str(out), "--plot", str(png)]) == 0 and png.stat().st_size > 5000


@pytest.mark.parametrize(
    "argv,message",
    [
        (["experiment", "adding", "--clip", "zero"], "--clip"),
        (["experiment", "copy", "--T", "1"], "--T"),
        (["experiment", "report", "/nonexistent.jsonl"], "no such results file"),
    ],
)
def test_experiment_cli_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_a_grid_counts_its_runs_and_estimates_the_time_left(tmp_path):
    out, lines = tmp_path / "r.jsonl", []
    cfgs = grid("copy", [2], ["rnn", "gru"], [None], [0], max_steps=2, eval_every=2, test_size=8)
    run_grid(cfgs[:1], out)
    run_grid(cfgs + grid("copy", [3], ["rnn"], [None], [0], max_steps=2, eval_every=2, test_size=8), out,
             log=lines.append)  # fmt: skip
    finished = [line for line in lines if line.startswith("== copy")]
    assert lines[0] == f"== 1 of 3 runs already in {out}; 2 to go"
    assert "[run 1/2, " in finished[0] and "so far, about " in finished[0] and finished[0].endswith(" left]")
    assert "[run 2/2, " in finished[1] and finished[1].endswith(" so far]")  # nothing left to estimate


def test_grid_figures_and_report_plot_need_matplotlib_before_any_run(tmp_path, capsys, monkeypatch):
    from unrolled import _optional

    monkeypatch.setattr(_optional, "is_installed", lambda module: module != "matplotlib")
    out = tmp_path / "a.jsonl"
    argv = ["experiment", "adding", "--T", "4", "--cells", "rnn", "--clip", "none", "--seeds", "0", "--steps",
            "3", "--out", str(out), "--figures", str(tmp_path / "f")]  # fmt: skip
    assert main(argv) == 2 and not out.exists()
    assert '--figures needs matplotlib: pip install -e ".[plot]"' in capsys.readouterr().err
