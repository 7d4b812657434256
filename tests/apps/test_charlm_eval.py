"""Bits per character: every prediction counted once, streams carried, independent of the chunking."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unrolled.apps.charlm import CharLMConfig, bits, evaluate, resume_config
from unrolled.models import ModelConfig, SequenceModel
from unrolled.nn import log_softmax

V = 7


@pytest.fixture
def model() -> SequenceModel:
    cfg = ModelConfig(vocab_size=V, embed_dim=5, hidden_size=9, num_layers=2, dtype="float64", seed=1)
    return SequenceModel(cfg)


def nll_of_stream(model: SequenceModel, ids: np.ndarray) -> np.ndarray:
    """The reference: one forward over the whole stream from a zero state; −log p of each next id."""
    model.eval()
    y, _ = model.forward(ids[:-1, None].astype(np.int64))
    logp = log_softmax(y[:, 0])
    return -logp[np.arange(len(ids) - 1), ids[1:]]


def test_one_stream_equals_one_forward_over_the_whole_text_whatever_the_chunk(model):
    ids = np.random.default_rng(0).integers(0, V, 101).astype(np.uint8)
    want = nll_of_stream(model, ids).mean()
    for seq_len in (1, 7, 100, 500):
        assert evaluate(model, ids, batch=1, seq_len=seq_len) == pytest.approx(want, rel=1e-12)


def test_parallel_streams_count_each_prediction_exactly_once(model):
    ids = np.random.default_rng(1).integers(0, V, 103).astype(np.uint8)  # 102 predictions, 4 streams of 26
    n, B = len(ids) - 1, 4
    L = math.ceil(n / B)
    parts = [nll_of_stream(model, ids[b * L : min((b + 1) * L, n) + 1]) for b in range(B)]
    assert sum(len(p) for p in parts) == n
    want = np.concatenate(parts).mean()
    assert evaluate(model, ids, batch=B, seq_len=5) == pytest.approx(want, rel=1e-12)


def test_evaluation_leaves_the_training_mode_as_it_was(model):
    model.train()
    evaluate(model, np.arange(20) % V)
    assert model.training


def test_bits_are_nats_over_ln2():
    assert bits(math.log(2)) == pytest.approx(1.0)
    assert bits(math.log(65)) == pytest.approx(math.log2(65))


def test_resume_keeps_the_architecture_and_data_layout_but_takes_new_budgets():
    saved = CharLMConfig(hidden=64, batch=8, steps=100)
    assert resume_config(saved, {"steps": 300, "lr": 1e-3}, "d") == CharLMConfig(
        hidden=64, batch=8, steps=300, lr=1e-3
    )
    for change in ({"hidden": 128}, {"batch": 16}, {"seq_len": 50}, {"cell": "gru"}, {"seed": 3}):
        with pytest.raises(ValueError, match="--resume cannot change"):
            resume_config(saved, change, "d")
    assert resume_config(saved, {"hidden": 64}, "d") == saved  # giving the same value is fine
