"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): gates that never see h_{t−1}.

Because no gate reads the previous state, each step is a *linear* recurrence in h with coefficients
computed from the input alone::

    h_t = a_t ⊙ h_{t−1} + b_t                                    (1)

minGRU, gate order z, h̃ in the stacked parameters (W_xh (2H, I), b_h (2H,))::

    k_z = W_xz x_t + b_z,   z_t = σ(k_z)
    k_h = W_xh̃ x_t + b_h̃,   h̃_t = act(k_h)
    h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ h̃_t        →  a_t = 1 − z_t,  b_t = z_t ⊙ h̃_t

minLSTM, gate order f, i, h̃ (W_xh (3H, I), b_h (3H,)), with the paper's normalised gates::

    f_t = σ(k_f),  i_t = σ(k_i),  h̃_t = act(k_h)
    f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t)      (f' + i' = 1: time-independent scale)
    h_t = f'_t ⊙ h_{t−1} + i'_t ⊙ h̃_t              →  a_t = f'_t,  b_t = i'_t ⊙ h̃_t

``act`` is the paper's g in the log-space version (``log_space=True``, the paper's default)::

    g(k) = k + 0.5 (k ≥ 0),  σ(k) (k < 0)          (positive, so h stays positive and log h exists)

and the identity otherwise (``log_space=False``: h̃ of either sign; the scan then runs in linear space).
Since a_t ∈ (0, 1), the recurrence (1) forgets geometrically and never amplifies.

One departure from the paper's code: it feeds h_0 through g as well (``log_h_0 = log_g(h_0)``); here the
initial state *is* h_0, so that the state ``step`` returns can be passed back in (streaming). In log-space
mode h_0 must then be ≥ 0 (zeros, the default, are; log 0 = −∞ is exact in the scan).

Backward. With δh_t the total gradient reaching h_t (from the output at t and from h_{t+1})::

    δh_t = ∂L/∂h_t + a_{t+1} ⊙ δh_{t+1}               (2)  the same linear recurrence, run backwards
    δa_t = δh_t ⊙ h_{t−1},   δb_t = δh_t,   δh_0 = a_1 ⊙ δh_1   (with 1-based t as in (1))
    minGRU:  δz = δh_t ⊙ (h̃_t − h_{t−1}),  δk_z = δz ⊙ z(1 − z),  δk_h = δh_t ⊙ z_t ⊙ act'(k_h)
    minLSTM: with f' = σ(d), d = log f − log i = softplus(−k_i) − softplus(−k_f):
             δf' = δh_t ⊙ (h_{t−1} − h̃_t),  δd = δf' ⊙ f'(1 − f'),
             δk_f = δd ⊙ (1 − f),  δk_i = −δd ⊙ (1 − i),  δk_h = δh_t ⊙ i' ⊙ act'(k_h)
    act' = 1 (k ≥ 0) or σ(k)(1 − σ(k)) (k < 0) for g;  1 for the identity.

Weights and bias gradients are Σ_t over the input pre-activation gradients δk (:mod:`unrolled.cells.bulk`).

Packed lengths: past a sequence's end a_t = 1 and b_t = 0, so h stays at its last valid value, and the
gradients of a_t, b_t there are zero (their δk is multiplied by the mask).

This module is the reference: the gate equations (:meth:`MinGRUCell.coefficients` and their backward
:meth:`~MinGRUCell.coefficients_backward`) and a plain sequential walk of (1) and (2). The parallel scans
that solve (1) and (2) for a whole sequence at once are in :mod:`unrolled.kernels.scan`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from unrolled.cells.bulk import input_gradients, project_inputs, sigmoid


class MinCache(NamedTuple):
    """What the reference forward keeps for BPTT (the coefficients are recomputed from ``k``)."""

    x: np.ndarray  # (T, B, I)
    k: np.ndarray  # (T, B, G·H) input pre-activations W_xh x_t + b_h
    hs: np.ndarray  # (T+1, B, H) hs[0] = h0
    mask: np.ndarray | None  # (T, B, 1)


def softplus(k: np.ndarray) -> np.ndarray:
    """log(1 + e^k) = max(k, 0) + log(1 + e^{−|k|}), without overflow. (Not np.logaddexp: its float32 loop
    measured ~100× slower than NumPy's vectorised exp and log here.)"""
    return np.maximum(k, 0) + np.log(1 + np.exp(-np.abs(k)))


def act(k: np.ndarray, log_space: bool) -> np.ndarray:
    """h̃ = g(k) = max(k, 0) + σ(min(k, 0)) (= k + 0.5 for k ≥ 0, σ(k) below; log_space) or k."""
    if not log_space:
        return k
    return np.maximum(k, 0) + sigmoid(np.minimum(k, 0))


def act_grad(k: np.ndarray, log_space: bool) -> np.ndarray | float:
    """act'(k): 1 (k ≥ 0) or σ(k)(1 − σ(k)) (k < 0) for g; 1 for the identity."""
    if not log_space:
        return 1.0
    s = sigmoid(np.minimum(k, 0))  # 0.5 where k ≥ 0, so s(1 − s) = 0.25 there
    ds = s * (1 - s)
    return ds + (k >= 0).astype(k.dtype) * (1 - ds)


def log_act(k: np.ndarray) -> np.ndarray:
    """log g(k) = log(k + 0.5) (k ≥ 0), log σ(k) = −softplus(−k) (k < 0)."""
    kn = np.minimum(k, 0)
    return np.log(np.maximum(k, 0) + 0.5) * (k >= 0) - softplus(-kn) * (k < 0)


@dataclass(frozen=True)
class _MinCell:
    """What minGRU and minLSTM share: the walk of (1), its BPTT (2), one step."""

    log_space: bool = True

    gates = 0  # set by the subclass
    state_names = ("h",)

    # The subclass's equations: (a, b) from k, their log, and δk from δa, δb.
    def coefficients(self, k: np.ndarray, mask: np.ndarray | None = None):  # pragma: no cover
        raise NotImplementedError

    def log_coefficients(self, k: np.ndarray, mask: np.ndarray | None = None):  # pragma: no cover
        raise NotImplementedError

    def coefficients_backward(self, k, h_prev, dh, mask=None):  # pragma: no cover
        raise NotImplementedError

    @staticmethod
    def _masked(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None):
        """a = 1, b = 0 past a sequence's end: h carries over unchanged."""
        if mask is not None:
            a = mask * a + (1 - mask)
            b = mask * b
        return a, b

    def step(self, x_t: np.ndarray, state: tuple[np.ndarray], p: dict) -> tuple[np.ndarray]:
        """One time step: x_t (B, I), state (h_{t−1},) -> (h_t,) = (a_t ⊙ h_{t−1} + b_t,)."""
        k = x_t @ p["W_xh"].T
        if "b_h" in p:
            k += p["b_h"]
        a, b = self.coefficients(k)
        return (a * state[0] + b,)

    def forward(self, x: np.ndarray, state0, p: dict, mask: np.ndarray | None):
        """The sequential reference: x (T, B, I), state0 (h0,) -> hs (T, B, H), (h_T,), cache."""
        T, B, _ = x.shape
        k = project_inputs(x, p["W_xh"], p.get("b_h"))  # (T, B, G·H)
        a, b = self.coefficients(k, mask)  # (T, B, H) each
        hs = np.empty((T + 1,) + a.shape[1:], dtype=x.dtype)
        hs[0] = state0[0]
        for t in range(T):
            hs[t + 1] = a[t] * hs[t] + b[t]
        return hs[1:], (hs[T].copy(),), MinCache(x, k, hs, mask)

    def backward(self, d_hs: np.ndarray, d_stateT, cache: MinCache, p: dict):
        """Sequential BPTT of (1) by (2). d_hs (T, B, H); (d_hT,) -> dx (T, B, I), (d_h0,), grads."""
        x, k, hs, mask = cache
        a, _ = self.coefficients(k, mask)
        dh = np.empty_like(d_hs)
        carry = d_stateT[0]
        for t in range(d_hs.shape[0] - 1, -1, -1):
            dh[t] = d_hs[t] + carry
            carry = a[t] * dh[t]  # what reaches h_{t−1}
        dk = self.coefficients_backward(k, hs[:-1], dh, mask)
        grads: dict[str, np.ndarray] = {}
        dx = input_gradients(dk, x, p, grads, bias_key="b_h")
        return dx, (carry,), grads


@dataclass(frozen=True)
class MinGRUCell(_MinCell):
    """minGRU: a = 1 − σ(k_z), b = σ(k_z) ⊙ act(k_h). See the module docstring."""

    gates = 2

    def coefficients(self, k: np.ndarray, mask: np.ndarray | None = None):
        """(a, b) of (1) from k = [k_z, k_h] (…, 2H)."""
        H = k.shape[-1] // 2
        z = sigmoid(k[..., :H])
        return self._masked(1 - z, z * act(k[..., H:], self.log_space), mask)

    def log_coefficients(self, k: np.ndarray, mask: np.ndarray | None = None):
        """(log a, log b) (log_space only): log(1 − z) = −softplus(k_z), log z = −softplus(−k_z)."""
        H = k.shape[-1] // 2
        kz = k[..., :H]
        log_a, log_b = -softplus(kz), -softplus(-kz) + log_act(k[..., H:])
        if mask is not None:
            log_a = np.where(mask > 0, log_a, 0.0)
            log_b = np.where(mask > 0, log_b, -np.inf)
        return log_a, log_b

    def coefficients_backward(self, k, h_prev, dh, mask=None):
        """δk (…, 2H) from δh_t (…, H) and h_{t−1} (…, H)."""
        H = k.shape[-1] // 2
        kz, kh = k[..., :H], k[..., H:]
        z = sigmoid(kz)
        dk = np.empty_like(k)
        dk[..., :H] = dh * (act(kh, self.log_space) - h_prev) * z * (1 - z)
        dk[..., H:] = dh * z * act_grad(kh, self.log_space)
        if mask is not None:
            dk *= mask
        return dk


@dataclass(frozen=True)
class MinLSTMCell(_MinCell):
    """minLSTM: a = f', b = i' ⊙ act(k_h), f' = f / (f + i). See the module docstring."""

    gates = 3

    @staticmethod
    def _d(k: np.ndarray, H: int) -> np.ndarray:
        """d = log f − log i = softplus(−k_i) − softplus(−k_f), so that f' = σ(d), i' = σ(−d)."""
        return softplus(-k[..., H : 2 * H]) - softplus(-k[..., :H])

    def coefficients(self, k: np.ndarray, mask: np.ndarray | None = None):
        """(a, b) of (1) from k = [k_f, k_i, k_h] (…, 3H)."""
        H = k.shape[-1] // 3
        fn = sigmoid(self._d(k, H))
        return self._masked(fn, (1 - fn) * act(k[..., 2 * H :], self.log_space), mask)

    def log_coefficients(self, k: np.ndarray, mask: np.ndarray | None = None):
        """(log a, log b) (log_space only): log f' = −softplus(−d), log i' = −softplus(d)."""
        H = k.shape[-1] // 3
        d = self._d(k, H)
        log_a, log_b = -softplus(-d), -softplus(d) + log_act(k[..., 2 * H :])
        if mask is not None:
            log_a = np.where(mask > 0, log_a, 0.0)
            log_b = np.where(mask > 0, log_b, -np.inf)
        return log_a, log_b

    def coefficients_backward(self, k, h_prev, dh, mask=None):
        """δk (…, 3H) from δh_t (…, H) and h_{t−1} (…, H)."""
        H = k.shape[-1] // 3
        kf, ki, kh = k[..., :H], k[..., H : 2 * H], k[..., 2 * H :]
        fn = sigmoid(self._d(k, H))
        ht = act(kh, self.log_space)
        dd = dh * (h_prev - ht) * fn * (1 - fn)
        dk = np.empty_like(k)
        dk[..., :H] = dd * (1 - sigmoid(kf))
        dk[..., H : 2 * H] = -dd * (1 - sigmoid(ki))
        dk[..., 2 * H :] = dh * (1 - fn) * act_grad(kh, self.log_space)
        if mask is not None:
            dk *= mask
        return dk
