"""Sampling the next character: temperature, top-k, seeds, and streaming through the one-step API."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled.apps.charlm.sampling import generate, next_distribution, sample_next
from unrolled.models import ModelConfig, SequenceModel

V = 12


def tiny_model(cell: str = "lstm", seed: int = 3) -> SequenceModel:
    cfg = ModelConfig(vocab_size=V, embed_dim=6, cell=cell, hidden_size=10, num_layers=2, seed=seed)
    model = SequenceModel(cfg)
    # Sharpen the head so that the distributions are far from uniform.
    model.params["head.W"] *= 4
    return model


def greedy_by_recomputing(model: SequenceModel, prime: list[int], length: int) -> list[int]:
    """The reference: at every step run the whole text so far again, take the arg max."""
    model.eval()
    ids = list(prime)
    for _ in range(length):
        y, _ = model.forward(np.array(ids, dtype=np.int64)[:, None])
        ids.append(int(np.argmax(y[-1, 0])))
    return ids[len(prime) :]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_greedy_streaming_equals_recomputing_the_whole_prefix(cell):
    model = tiny_model(cell)
    got = list(generate(model, np.array([1, 4, 2]), 25, temperature=0.0))
    assert got == greedy_by_recomputing(model, [1, 4, 2], 25)


@pytest.mark.parametrize("temperature", [1e-3, 1e-6])
def test_temperature_towards_zero_equals_greedy(temperature):
    model = tiny_model()
    greedy = list(generate(model, np.array([0]), 40, temperature=0.0))
    cold = list(generate(model, np.array([0]), 40, temperature=temperature, rng=np.random.default_rng(1)))
    assert cold == greedy
    assert len(set(greedy)) > 1  # a non-trivial sequence


def test_fixed_seed_reproduces_the_sample_and_another_seed_differs():
    model = tiny_model()

    def draw(seed):
        return list(generate(model, np.array([5, 6]), 60, temperature=1.0, rng=np.random.default_rng(seed)))

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_top_k_never_emits_a_token_outside_the_k_largest():
    rng = np.random.default_rng(0)
    for k in (1, 2, 5):
        for _ in range(300):
            logits = rng.standard_normal(V) * 3
            allowed = set(np.argsort(logits)[-k:].tolist())
            assert sample_next(logits, 1.5, k, rng) in allowed


def test_top_k_in_generation_never_leaves_the_models_top_k():
    class Recording:
        """Wraps a model and records the logits each emitted token was drawn from."""

        def __init__(self, model):
            self.model, self.logits = model, []

        def eval(self):
            self.model.eval()

        def forward(self, x, state):
            y, s = self.model.forward(x, state)
            self.logits.append(y[-1, 0])
            return y, s

        def step(self, x_t, state):
            y, s = self.model.step(x_t, state)
            self.logits.append(y[0])
            return y, s

    rec = Recording(tiny_model())
    out = list(generate(rec, np.array([3]), 200, temperature=2.0, top_k=3, rng=np.random.default_rng(0)))
    for token, y in zip(out, rec.logits, strict=True):
        assert token in np.argsort(y)[-3:]


def test_top_k_1_is_greedy():
    model = tiny_model()
    greedy = list(generate(model, np.array([2]), 30, temperature=0.0))
    assert list(generate(model, np.array([2]), 30, 5.0, top_k=1, rng=np.random.default_rng(0))) == greedy


def test_sampling_frequencies_follow_softmax_of_logits_over_temperature():
    logits = np.array([2.0, 1.0, 0.0, -1.0])
    rng = np.random.default_rng(0)
    n = 20_000
    for temperature in (0.5, 2.0):
        counts = np.bincount([sample_next(logits, temperature, None, rng) for _ in range(n)], minlength=4)
        p = np.exp(logits / temperature) / np.exp(logits / temperature).sum()
        np.testing.assert_allclose(counts / n, p, atol=4 * np.sqrt(p * (1 - p) / n).max())


def test_next_distribution_limits():
    logits = np.array([0.1, 3.0, 2.9, -5.0])
    np.testing.assert_array_equal(next_distribution(logits, 0.0), [0, 1, 0, 0])
    p = next_distribution(logits, 1.0, top_k=2)
    assert p[0] == 0 and p[3] == 0 and p.sum() == pytest.approx(1.0)


def test_each_generated_token_costs_one_step_of_one_token():
    calls = []

    class Counting:
        def __init__(self, model):
            self.model = model

        def eval(self):
            self.model.eval()

        def forward(self, x, state):
            calls.append(("forward", x.shape))
            return self.model.forward(x, state)

        def step(self, x_t, state):
            calls.append(("step", x_t.shape))
            return self.model.step(x_t, state)

    list(generate(Counting(tiny_model()), np.array([1, 2, 3, 4]), 10, rng=np.random.default_rng(0)))
    # The prime is read once; then one single-token step per drawn token (none after the last one).
    assert calls == [("forward", (4, 1))] + [("step", (1,))] * 9


def test_bad_sampling_options_are_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match="temperature"):
        list(generate(model, np.array([1]), 3, temperature=-1.0))
    with pytest.raises(ValueError, match="top-k"):
        list(generate(model, np.array([1]), 3, top_k=0))
    with pytest.raises(ValueError, match="prime"):
        list(generate(model, np.array([], dtype=np.int64), 3))
