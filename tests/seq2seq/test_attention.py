"""Attention (additive, general, dot) against central finite differences in float64, with padded sources."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled.seq2seq.attention import KINDS, Attention, masked_softmax

from gradcheck import numeric_grad

B, S, M, Q, A = 3, 5, 4, 4, 6
LENGTHS = np.array([5, 3, 1])


def _setup(kind: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    att = Attention(kind)
    p = att.init_params(rng, Q, M, A, np.float64)
    for k in p:  # move away from the zero bias so every term of the derivative is exercised
        p[k] += 0.1 * rng.standard_normal(p[k].shape)
    memory = rng.standard_normal((B, S, M))
    mask = (np.arange(S)[None, :] < LENGTHS[:, None]).astype(np.float64)
    memory *= mask[:, :, None]  # the encoder's outputs are zero past each length
    queries = [rng.standard_normal((B, Q)) for _ in range(2)]
    d_ctx = [rng.standard_normal((B, M)) for _ in range(2)]
    d_alpha = [rng.standard_normal((B, S)) for _ in range(2)]
    return att, p, memory, mask, queries, d_ctx, d_alpha


def _loss(att, p, memory, mask, queries, d_ctx, d_alpha) -> float:
    """Two decoder steps sharing one memory: L = Σ_t (c_t·δc_t + α_t·δα_t), random upstream gradients."""
    mem = att.prepare(memory, mask, p)
    total = 0.0
    for q, dc, da in zip(queries, d_ctx, d_alpha, strict=True):
        c, alpha, _ = att.step(q, mem, p)
        total += float((c * dc).sum() + (alpha * da).sum())
    return total


def _analytic(att, p, memory, mask, queries, d_ctx, d_alpha):
    mem = att.prepare(memory, mask, p)
    caches = [att.step(q, mem, p)[2] for q in queries]
    grads: dict = {}
    acc = att.zero_memory_grad(mem)
    d_q = [
        att.step_backward(dc, cache, mem, p, grads, acc, d_alpha=da)
        for dc, da, cache in zip(d_ctx, d_alpha, caches, strict=True)
    ]
    d_mem = att.backward_memory(acc, mem, p, grads)
    return d_q, d_mem, grads


@pytest.mark.parametrize("kind", KINDS)
def test_attention_matches_finite_differences_with_masked_source_positions(kind):
    att, p, memory, mask, queries, d_ctx, d_alpha = _setup(kind)
    d_q, d_mem, grads = _analytic(att, p, memory, mask, queries, d_ctx, d_alpha)

    def f():
        return _loss(att, p, memory, mask, queries, d_ctx, d_alpha)

    for t, q in enumerate(queries):
        np.testing.assert_allclose(
            d_q[t], numeric_grad(f, q), rtol=1e-6, atol=1e-8, err_msg=f"d_query step {t}"
        )
    np.testing.assert_allclose(d_mem, numeric_grad(f, memory), rtol=1e-6, atol=1e-8, err_msg="d_memory")
    assert set(grads) == set(p)
    for k in p:
        np.testing.assert_allclose(grads[k], numeric_grad(f, p[k]), rtol=1e-6, atol=1e-8, err_msg=k)


@pytest.mark.parametrize("kind", KINDS)
def test_padding_gets_zero_weight_and_zero_gradient(kind):
    att, p, memory, mask, queries, d_ctx, d_alpha = _setup(kind, seed=1)
    mem = att.prepare(memory, mask, p)
    _, alpha, _ = att.step(queries[0], mem, p)
    assert np.all(alpha[mask == 0] == 0.0)
    np.testing.assert_allclose(alpha.sum(axis=1), 1.0)
    _, d_mem, _ = _analytic(att, p, memory, mask, queries, d_ctx, d_alpha)
    assert np.all(d_mem[mask == 0] == 0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_garbage_in_padded_memory_does_not_change_the_context(kind):
    att, p, memory, mask, queries, _, _ = _setup(kind, seed=2)
    c1, a1, _ = att.step(queries[0], att.prepare(memory, mask, p), p)
    noisy = memory + 100.0 * (1 - mask)[:, :, None]
    c2, a2, _ = att.step(queries[0], att.prepare(noisy, mask, p), p)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_allclose(c1, c2, rtol=1e-12, atol=1e-12)


def test_masked_softmax_is_the_softmax_over_valid_positions():
    e = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]])
    m = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    a = masked_softmax(e, m)
    z = np.exp(1) + np.exp(2)
    np.testing.assert_allclose(a[0], [np.exp(1) / z, np.exp(2) / z, 0.0])
    np.testing.assert_allclose(a[1], np.exp(e[1]) / np.exp(e[1]).sum())


def test_dot_attention_refuses_mismatched_sizes_and_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="dot"):
        Attention("dot").init_params(np.random.default_rng(0), 3, 4, 5, np.float64)
    with pytest.raises(ValueError, match="attention: expected one of"):
        Attention("bilinear")
