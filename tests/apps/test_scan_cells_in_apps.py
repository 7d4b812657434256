"""minGRU and minLSTM wherever a cell is chosen by name: the model, the experiments, the char-LM command
line (train, resume from its checkpoint, sample)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from unrolled.apps.experiments import RunConfig, run_one
from unrolled.checkpoint import load_model, save_model
from unrolled.models import ModelConfig, SequenceModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "commands"))
from test_cli_charlm import TEXT, TINY, unrolled  # noqa: E402


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_sequence_model_with_a_scan_cell_round_trips_through_a_checkpoint(cell, tmp_path):
    cfg = ModelConfig(
        input="tokens", vocab_size=7, embed_dim=4, cell=cell, hidden_size=5, num_layers=2, seed=0
    )
    model = SequenceModel(cfg)
    x = np.random.default_rng(0).integers(0, 7, size=(6, 3))
    y, _ = model(x)
    save_model(tmp_path / "ck", model)
    again, _ = load_model(tmp_path / "ck")
    assert again.config == cfg
    np.testing.assert_array_equal(again(x)[0], y)


def test_scan_cells_refuse_recurrent_dropout():
    with pytest.raises(ValueError, match="recurrent_dropout: mingru has no recurrent weights"):
        ModelConfig(input="dense", input_size=2, output_size=1, cell="mingru", recurrent_dropout=0.1)


def test_a_short_mingru_run_learns_the_adding_problem_at_T_10():
    """Not a benchmark: well below the trivial baseline within 600 steps, as the LSTM's test asks."""
    cfg = RunConfig(task="adding", cell="mingru", T=10, max_steps=600, eval_every=100, seed=0, lr=1e-2)
    rec = run_one(cfg)
    assert rec["final_loss"] < 0.3 * rec["baseline"], rec["final_loss"]
    assert all(math.isnan(h["gamma"]) for h in rec["history"]) and rec["regime_final"] is None
    json.dumps(rec)


def test_charlm_trains_resumes_and_samples_with_a_scan_cell(tmp_path):
    text = tmp_path / "in.txt"
    text.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "run"
    r = unrolled("train", "charlm", "--text", text, "--out", out, "--cell", "minlstm", "--steps", "20", *TINY)
    assert r.returncode == 0, r.stderr
    r = unrolled("train", "charlm", "--out", out, "--resume", "--steps", "30", "--quiet")
    assert r.returncode == 0, r.stderr
    r = unrolled("sample", out, "--prime", "the ", "--length", "40", "--seed", "1")
    assert r.returncode == 0 and len(r.stdout) >= 40, r.stderr
    r = unrolled("train", "charlm", "--text", text, "--out", tmp_path / "bad", "--cell", "mingruu", *TINY)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "unrolled train charlm: error: argument --cell" in r.stderr.strip().splitlines()[-1]
