"""Attention over the encoder outputs: additive (Bahdanau) and multiplicative (Luong general / dot).

The memory is the encoder's output sequence h_s (B, S, M) with a source mask m_s ∈ {0, 1} (B, S);
the query is a decoder state q (B, Q). With symbols as in the code::

    additive (Bahdanau et al. 2015):  u_s = tanh(W_q q + k_s + b_a),  k_s = U_k h_s,   e_s = v_aᵀ u_s
    general  (Luong et al. 2015):     e_s = qᵀ k_s,  k_s = W_a h_s
    dot      (Luong et al. 2015):     e_s = qᵀ k_s,  k_s = h_s                   (needs Q == M)
    α_s = m_s exp(e_s) / Σ_s' m_s' exp(e_s')      (padding gets exactly 0: it cannot leak into c)
    c   = Σ_s α_s h_s

The keys k_s do not depend on the query, so they are computed once per source sentence
(:meth:`prepare`), not once per decoder step. Backward, with δc and (optionally) δα given::

    δα_s += δc · h_s,                      δh_s += α_s δc
    δe_s  = α_s (δα_s − Σ_s' α_s' δα_s')   (softmax Jacobian; 0 where m_s = 0, because α_s = 0)
    additive: δu_s = δe_s v_a ⊙ (1 − u_s²),  δv_a = Σ δe_s u_s,  δb_a = Σ δu_s,
              δq = W_qᵀ Σ_s δu_s,  δW_q = Σ_b (Σ_s δu_s) qᵀ,  δk_s = δu_s
    general / dot:  δq = Σ_s δe_s k_s,  δk_s = δe_s q
    keys (once, after all steps):  general δW_a = Σ δk_s h_sᵀ, δh_s += W_aᵀ δk_s;
                                   additive δU_k = Σ δk_s h_sᵀ, δh_s += U_kᵀ δk_s;  dot δh_s += δk_s

The attention objects are stateless (like the cells): parameters come in as a dict and parameter
gradients are *added* into a dict the caller owns, because one memory serves every decoder step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from unrolled.init import glorot_uniform

KINDS = ("additive", "general", "dot")


class Memory(NamedTuple):
    """The encoder outputs prepared for attention (computed once per batch of sources)."""

    values: np.ndarray  # (B, S, M) h_s, what the context averages
    keys: np.ndarray  # (B, S, K) k_s: U_k h_s (additive, K = A), W_a h_s (general, K = Q), h_s (dot)
    mask: np.ndarray  # (B, S) 1.0 at real source positions, 0.0 at padding


class MemoryGrad(NamedTuple):
    """Gradients that the decoder steps add up for one memory; turned into δh_s by :meth:`backward_memory`."""

    d_values: np.ndarray  # (B, S, M)
    d_keys: np.ndarray  # (B, S, K)


class AttentionCache(NamedTuple):
    """What one attention step keeps for its backward."""

    q: np.ndarray  # (B, Q) the query
    alpha: np.ndarray  # (B, S) attention weights
    u: np.ndarray | None  # (B, S, A) tanh activations (additive only)


def masked_softmax(e: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """α_s = m_s exp(e_s) / Σ_s' m_s' exp(e_s') over the last axis; e, mask (B, S), one 1 per row at least."""
    e = np.where(mask > 0, e, -np.inf)
    alpha = np.exp(e - e.max(axis=-1, keepdims=True))
    alpha /= alpha.sum(axis=-1, keepdims=True)
    return alpha


@dataclass(frozen=True)
class Attention:
    """One of the three scores of the module docstring; ``kind`` in ``KINDS``.

    Parameters (names in ``params``): additive ``W_q`` (A, Q), ``U_k`` (A, M), ``b_a`` (A,), ``v_a`` (A,);
    general ``W_a`` (Q, M); dot none.
    """

    kind: str = "general"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"attention: expected one of {', '.join(KINDS)}, got {self.kind!r}")

    def init_params(
        self, rng: np.random.Generator, query_size: int, memory_size: int, attn_size: int, dtype
    ) -> dict[str, np.ndarray]:
        """Glorot-uniform weights, zero bias; ``attn_size`` A is used by the additive score only."""
        if self.kind == "additive":
            return {
                "W_q": glorot_uniform(rng, attn_size, query_size).astype(dtype),
                "U_k": glorot_uniform(rng, attn_size, memory_size).astype(dtype),
                "b_a": np.zeros(attn_size, dtype=dtype),
                "v_a": (rng.uniform(-1, 1, size=attn_size) / np.sqrt(attn_size)).astype(dtype),
            }
        if self.kind == "general":
            return {"W_a": glorot_uniform(rng, query_size, memory_size).astype(dtype)}
        if query_size != memory_size:
            raise ValueError(
                f"attention: 'dot' needs the decoder size ({query_size}) to equal the encoder output size "
                f"({memory_size}); use 'general' or 'additive'"
            )
        return {}

    # ------------------------------------------------------------------ forward
    def prepare(self, memory: np.ndarray, mask: np.ndarray, p: dict) -> Memory:
        """Keys of every source position, once: memory (B, S, M), mask (B, S) -> :class:`Memory`."""
        if self.kind == "additive":
            keys = memory @ p["U_k"].T  # (B, S, A)
        elif self.kind == "general":
            keys = memory @ p["W_a"].T  # (B, S, Q)
        else:
            keys = memory
        return Memory(memory, keys, mask.astype(memory.dtype, copy=False))

    def step(self, q: np.ndarray, mem: Memory, p: dict) -> tuple[np.ndarray, np.ndarray, AttentionCache]:
        """Attend with query q (B, Q): returns context c (B, M), weights α (B, S), cache."""
        u = None
        if self.kind == "additive":
            u = np.tanh(mem.keys + (q @ p["W_q"].T + p["b_a"])[:, None, :])  # (B, S, A)
            e = u @ p["v_a"]  # (B, S)
        else:
            e = np.einsum("bsk,bk->bs", mem.keys, q)  # (B, S)
        alpha = masked_softmax(e, mem.mask)
        context = np.einsum("bs,bsm->bm", alpha, mem.values)  # (B, M)
        return context, alpha, AttentionCache(q, alpha, u)

    # ------------------------------------------------------------------ backward
    def zero_memory_grad(self, mem: Memory) -> MemoryGrad:
        """Accumulators for δh_s (through the values) and δk_s, to be summed over decoder steps."""
        return MemoryGrad(np.zeros_like(mem.values), np.zeros_like(mem.keys))

    def step_backward(
        self,
        d_context: np.ndarray,
        cache: AttentionCache,
        mem: Memory,
        p: dict,
        grads: dict,
        acc: MemoryGrad,
        d_alpha: np.ndarray | None = None,
    ) -> np.ndarray:
        """Backward of one :meth:`step`. d_context (B, M), optional d_alpha (B, S).

        Adds parameter gradients into ``grads`` and memory gradients into ``acc``; returns δq (B, Q).
        """
        q, alpha, u = cache
        da = np.einsum("bm,bsm->bs", d_context, mem.values)  # δα_s = δc · h_s
        if d_alpha is not None:
            da += d_alpha
        acc.d_values[...] += alpha[:, :, None] * d_context[:, None, :]
        de = alpha * (da - (alpha * da).sum(axis=1, keepdims=True))  # (B, S)
        if self.kind == "additive":
            du = de[:, :, None] * p["v_a"] * (1.0 - u * u)  # (B, S, A)
            _add(grads, "v_a", np.einsum("bs,bsa->a", de, u))
            du_sum = du.sum(axis=1)  # (B, A): the query term is shared by every s
            _add(grads, "b_a", du_sum.sum(axis=0))
            _add(grads, "W_q", du_sum.T @ q)
            acc.d_keys[...] += du
            return du_sum @ p["W_q"]
        acc.d_keys[...] += de[:, :, None] * q[:, None, :]
        return np.einsum("bs,bsk->bk", de, mem.keys)

    def backward_memory(self, acc: MemoryGrad, mem: Memory, p: dict, grads: dict) -> np.ndarray:
        """After all steps: δh_s (B, S, M) from the summed value and key gradients; adds δU_k / δW_a."""
        d_mem = acc.d_values.copy()
        if self.kind == "dot":
            d_mem += acc.d_keys
            return d_mem
        name = "U_k" if self.kind == "additive" else "W_a"
        B, S, K = acc.d_keys.shape
        M = mem.values.shape[2]
        _add(grads, name, acc.d_keys.reshape(B * S, K).T @ mem.values.reshape(B * S, M))
        d_mem += acc.d_keys @ p[name]
        return d_mem


def _add(grads: dict, name: str, g: np.ndarray) -> None:
    if name in grads:
        grads[name] += g
    else:
        grads[name] = g.copy()
