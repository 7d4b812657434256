"""Exact per-step Jacobians of the recurrent state from the values a cell's forward stored, and products.

The state s_t of a cell is h_t (vanilla RNN, GRU) or the joint (h_t, c_t) of an LSTM, stacked as
s_t = [h_t ; c_t] (S = 2H). Time indices follow the caches: s_0 is the initial state, step t (t = 0..T−1)
maps s_t to s_{t+1}, and ``J[t] = ∂s_{t+1}/∂s_t`` (B, S, S). The products are

    ∂s_t/∂s_k = J[t−1] J[t−2] … J[k]          (k ≤ t;  ∂s_t/∂s_t = I)

which is the seed formula ∂h_t/∂h_k = ∏_{i=k+1}^{t} diag(σ'(a_i)) W_hh of the vanilla RNN, written
for every cell. Everything here is float64, whatever the layer's dtype.

Per-step Jacobians, in the symbols of the cell modules (σ' = the activation's derivative, s(1 − s) of a
sigmoid value s; W_i … the gate blocks of W_hh; diag(v) W scales the rows of W)::

    vanilla:  ∂h_t/∂h_{t-1} = diag(σ'(a_t)) W_hh
    LSTM:     ∂c_t/∂h_{t-1} = diag(c_{t-1} f(1−f)) W_f + diag(g i(1−i)) W_i + diag(i (1−g²)) W_g
              ∂c_t/∂c_{t-1} = diag(f_t)                       (the c-path alone: no W_hh, no squashing)
              ∂h_t/∂h_{t-1} = diag(tanh(c_t) o(1−o)) W_o + diag(o (1−tanh²c_t)) ∂c_t/∂h_{t-1}
              ∂h_t/∂c_{t-1} = diag(o (1−tanh²c_t) f_t)
    GRU:      ∂h_t/∂h_{t-1} = diag(1−z) + diag(h̃−h_{t-1}) ∂z/∂h + diag(z) ∂h̃/∂h,  ∂z/∂h = diag(z(1−z)) W_z,
              ∂r/∂h = diag(r(1−r)) W_r, and
              reset_after:  ∂h̃/∂h = diag(1−h̃²) (diag(W_n h_{t-1} + b_hn) ∂r/∂h + diag(r) W_n)
              classic:      ∂h̃/∂h = diag(1−h̃²) W_n (diag(r) + diag(h_{t-1}) ∂r/∂h)

With recurrent dropout (a mask d (B, H) on h_{t-1} where it meets W_hh) every W_hh-side term is
multiplied on the right by diag(d), and the classic GRU's h_{t-1} in r ⊙ h_{t-1} becomes d ⊙ h_{t-1};
the carries (the GRU's (1 − z) ⊙ h_{t-1}, the LSTM's f ⊙ c_{t-1}) are untouched. A finished sequence
(mask m_t = 0) carries its state, so there J[t] = I.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from unrolled.cells import GRUCell, LSTMCell, RNNCell

LOG10_ZERO = -np.inf  # log10 of a norm that is exactly zero (a dead ReLU path)


def _require(cache, fields: tuple[str, ...], cell) -> None:
    missing = [f for f in fields if not hasattr(cache, f)]
    if missing:
        raise TypeError(
            f"{type(cell).__name__}: the cache {type(cache).__name__} lacks {', '.join(missing)}; "
            "diagnostics need the reference cell's cache (see unrolled.cells)"
        )


def _rec_mask(cache) -> np.ndarray | None:
    """The recurrent dropout mask d (B, H) as float64, or None."""
    d = getattr(cache, "rec_mask", None)
    return None if d is None else np.asarray(d, dtype=np.float64)


def state_size(cell, params: dict) -> int:
    """S, the size of the state the Jacobians act on: H, or 2H for the LSTM's joint (h, c)."""
    H = params["W_hh"].shape[1]
    return 2 * H if isinstance(cell, LSTMCell) else H


def num_steps(cache) -> int:
    """T, the number of steps the cache covers."""
    return cache.x.shape[0]


def step_jacobian(cell, cache, params: dict, t: int) -> np.ndarray:
    """The exact Jacobian J[t] = ∂s_{t+1}/∂s_t of one step, from the forward's stored values.

    Parameters
    ----------
    cell : RNNCell, LSTMCell or GRUCell (or a subclass, e.g. the diagnostics' LinearRNNCell).
    cache : the cell's forward cache (RNNCache / LSTMCache / GRUCache).
    params : the cell's parameters (``W_hh`` (G·H, H) is the only one used, with ``b_hn`` for the GRU).
    t : step index in 0..T−1.

    Returns
    -------
    J : (B, S, S) float64, S = H (vanilla, GRU) or 2H (LSTM, state [h; c]).
    """
    T = num_steps(cache)
    if not 0 <= t < T:
        raise IndexError(f"t: expected a step index in 0..{T - 1}, got {t}")
    W = np.asarray(params["W_hh"], dtype=np.float64)
    H = W.shape[1]
    if isinstance(cell, LSTMCell):
        J = _lstm_step(cache, W, H, t)
    elif isinstance(cell, GRUCell):
        J = _gru_step(cell, cache, W, H, t)
    elif isinstance(cell, RNNCell):
        _require(cache, ("dact",), cell)
        J = cache.dact[t].astype(np.float64)[:, :, None] * W[None]  # (B, H, H) diag(σ'(a_t)) W_hh
        d = _rec_mask(cache)
        if d is not None:
            J = J * d[:, None, :]  # … diag(d)
    else:
        raise TypeError(
            f"cell: expected an RNNCell, LSTMCell or GRUCell, got {type(cell).__name__} (the layer-norm, "
            "peephole, projected and zoneout LSTM and the layer-norm GRU have no step Jacobian here)"
        )
    if cache.mask is not None:
        # (B, 1, 1) lengths, or (B, H, 1) zoneout's per-unit update mask m: J = diag(m) J̃ + diag(1 − m).
        m = cache.mask[t].astype(np.float64)[:, :, None]
        J = m * J + (1.0 - m) * np.eye(J.shape[-1])
    return J


def _lstm_step(cache, W: np.ndarray, H: int, t: int) -> np.ndarray:
    _require(cache, ("cs", "gates", "tanh_c"), LSTMCell())
    gates = cache.gates[t].astype(np.float64)
    i, f, g, o = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H : 3 * H], gates[:, 3 * H :]
    c_prev = cache.cs[t].astype(np.float64)
    tc = cache.tanh_c[t].astype(np.float64)
    W_i, W_f, W_g, W_o = W[:H], W[H : 2 * H], W[2 * H : 3 * H], W[3 * H :]
    k = o * (1.0 - tc * tc)  # (B, H) ∂h_t/∂c_t
    dc_dh = (
        (c_prev * f * (1 - f))[:, :, None] * W_f
        + (g * i * (1 - i))[:, :, None] * W_i
        + (i * (1 - g * g))[:, :, None] * W_g
    )  # (B, H, H)
    dh_dh = (tc * o * (1 - o))[:, :, None] * W_o + k[:, :, None] * dc_dh
    d = _rec_mask(cache)
    if d is not None:  # every ∂/∂h_{t-1} of the LSTM goes through W_hh (d ⊙ h_{t-1})
        dc_dh, dh_dh = dc_dh * d[:, None, :], dh_dh * d[:, None, :]
    B = gates.shape[0]
    J = np.zeros((B, 2 * H, 2 * H))
    J[:, :H, :H] = dh_dh
    J[:, H:, :H] = dc_dh
    idx = np.arange(H)
    J[:, idx, H + idx] = k * f  # ∂h_t/∂c_{t-1}, diagonal
    J[:, H + idx, H + idx] = f  # ∂c_t/∂c_{t-1}, diagonal
    return J


def _gru_step(cell: GRUCell, cache, W: np.ndarray, H: int, t: int) -> np.ndarray:
    _require(cache, ("gates", "hn"), cell)
    gates = cache.gates[t].astype(np.float64)
    z, r, n = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H :]
    h = cache.hs[t].astype(np.float64)
    hn = cache.hn[t].astype(np.float64)
    d = _rec_mask(cache)
    hd = h if d is None else d * h  # what met W_hh
    W_z, W_r, W_n = W[:H], W[H : 2 * H], W[2 * H :]
    # The W_hh-side derivatives are taken w.r.t. hd = d ⊙ h; the chain rule's diag(d) comes last.
    dz = (z * (1 - z))[:, :, None] * W_z  # (B, H, H) ∂z/∂hd
    dr = (r * (1 - r))[:, :, None] * W_r  # (B, H, H) ∂r/∂hd
    if cell.reset_after:
        dn_pre = hn[:, :, None] * dr + r[:, :, None] * W_n  # hn = W_n hd + b_hn
    else:
        dn_pre = W_n @ (r[:, :, None] * np.eye(H) + hd[:, :, None] * dr)  # hn = r ⊙ hd
    dn = (1 - n * n)[:, :, None] * dn_pre
    J = (n - h)[:, :, None] * dz + z[:, :, None] * dn
    if d is not None:
        J = J * d[:, None, :]
    idx = np.arange(H)
    J[:, idx, idx] += 1 - z
    return J


def step_jacobians(cell, cache, params: dict) -> np.ndarray:
    """All per-step Jacobians J (T, B, S, S), J[t] = ∂s_{t+1}/∂s_t (memory T·B·S²·8 bytes: small problems)."""
    return np.stack([step_jacobian(cell, cache, params, t) for t in range(num_steps(cache))])


def cpath_factors(cache) -> np.ndarray:
    """The LSTM's c-path alone: ∂c_t/∂c_{t-1} holding h_{t-1} fixed is diag(f_t).

    Returns the diagonals (T, B, H) float64 (1 where the sequence has ended). Their products
    ∏ f over a span are the constant-error-carousel gain; its spectral norm is the largest entry.
    """
    _require(cache, ("gates", "cs"), LSTMCell())
    H = cache.cs.shape[2]
    f = cache.gates[:, :, H : 2 * H].astype(np.float64)
    if cache.mask is not None:
        m = cache.mask.astype(np.float64)
        f = m * f + (1 - m)
    return f


class ProductNorms(NamedTuple):
    """log10 norms of ∂s_T/∂s_k for k = 0..T, per sequence; entry k is at distance d = T − k."""

    log10_spectral: np.ndarray  # (T+1, B) log10 ‖∂s_T/∂s_k‖₂
    log10_frobenius: np.ndarray  # (T+1, B) log10 ‖∂s_T/∂s_k‖_F
    products: np.ndarray | None  # (T+1, B, S, S) the matrices themselves when asked for (may under/overflow)


def jacobian_products(
    cell,
    cache,
    params: dict,
    end: int | None = None,
    keep: bool = False,
    spectral_at=None,
    on_progress: Callable[[int], None] | None = None,
) -> ProductNorms:
    """∂s_end/∂s_k for every k = 0..end, with their spectral and Frobenius norms.

    Accumulated from the end, P_end = I, P_k = P_{k+1} J[k]. The norms are tracked in log space: P is
    rescaled by its Frobenius norm after every step and the scale summed, so a factor 0.5^1000 neither
    underflows nor turns the fit into zeros.

    Parameters
    ----------
    cell, cache, params : as for :func:`step_jacobian`.
    end : the later time (default T, the last state).
    keep : also return the matrices (T+1, B, S, S) (unscaled; float64 may under/overflow for long spans).
    spectral_at : the k at which to compute the spectral norm (an eigen-decomposition of PᵀP, the costly
        part for large states); default every k. Elsewhere ``log10_spectral`` is NaN.
    on_progress : called with 1 after each of the ``end`` steps (a progress bar's ``update``): for a
        large state this walk takes tens of seconds.

    Returns
    -------
    ProductNorms with arrays of length end + 1 along the first axis, indexed by k.
    """
    T = num_steps(cache)
    end = T if end is None else int(end)
    if not 0 <= end <= T:
        raise ValueError(f"end: expected a time in 0..{T}, got {end}")
    B, S = cache.hs.shape[1], state_size(cell, params)
    want = np.ones(end + 1, dtype=bool)
    if spectral_at is not None:
        want[:] = False
        want[np.asarray(spectral_at, dtype=np.int64)] = True
    spec = np.full((end + 1, B), np.nan)
    frob = np.empty((end + 1, B))
    mats = np.empty((end + 1, B, S, S)) if keep else None
    P = np.broadcast_to(np.eye(S), (B, S, S)).copy()
    scale = np.zeros(B)  # log10 of the factor taken out of P
    spec[end], frob[end] = 0.0, 0.5 * np.log10(S)
    if keep:
        mats[end] = P
    for k in range(end - 1, -1, -1):
        P = P @ step_jacobian(cell, cache, params, k)  # (B, S, S) ∂s_end/∂s_k, up to 10^scale
        if keep:
            mats[k] = P * 10.0 ** scale[:, None, None]
        P, new_scale = _renormalise(P, scale)
        frob[k] = new_scale  # ‖P‖_F = 1 after renormalising: the scale is the norm
        if want[k]:
            with np.errstate(divide="ignore"):
                spec[k] = new_scale + np.log10(spectral_norm(P))
        scale = new_scale
        if on_progress is not None:
            on_progress(1)
    return ProductNorms(spec, frob, mats)


def spectral_norm(P: np.ndarray) -> np.ndarray:
    """‖P‖₂ of each matrix of P (B, S, S), as sqrt(λ_max(PᵀP)): about half the cost of an SVD, and as
    accurate for the largest singular value of a matrix of Frobenius norm about 1 (relative ~1e-13)."""
    G = np.swapaxes(P, -1, -2) @ P
    return np.sqrt(np.maximum(np.linalg.eigvalsh(G)[..., -1], 0.0))


def cpath_log10_norms(cache, end: int | None = None) -> np.ndarray:
    """log10 ‖∏_{i=k}^{end−1} diag(f_i)‖₂ = log10 max_j ∏ f_{i,j} for k = 0..end, per sequence: (end+1, B)."""
    f = cpath_factors(cache)  # (T, B, H)
    T = f.shape[0]
    end = T if end is None else int(end)
    with np.errstate(divide="ignore"):
        logf = np.log10(f[:end])
    # Σ over i = k..end−1 of log f, per unit: a reversed cumulative sum.
    cum = np.concatenate([np.cumsum(logf[::-1], axis=0)[::-1], np.zeros((1,) + f.shape[1:])])
    return cum.max(axis=2)


def _renormalise(P: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P / ‖P‖_F per sequence, and scale + log10 ‖P‖_F (a zero matrix stays zero, scale −inf)."""
    fn = np.linalg.norm(P, axis=(1, 2))
    ok = fn > 0
    P = P / np.where(ok, fn, 1.0)[:, None, None]
    with np.errstate(divide="ignore"):
        return P, np.where(ok, scale + np.log10(np.where(ok, fn, 1.0)), -np.inf)


def pairwise_log10_norms(
    cell,
    cache,
    params: dict,
    times: np.ndarray | None = None,
    batch=None,
    on_progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """log10 ‖∂s_t/∂s_k‖₂ for every pair of times t ≥ k on a grid, averaged over sequences.

    Parameters
    ----------
    times : increasing times in 0..T (default: all of 0..T). Cost: T step Jacobians, n²/2 matrix products
        and n²/2 spectral norms (an SVD each) of (B, S, S), n = len(times).
    batch : sequences to use (an index or slice; default all). The mean is over these sequences' log10
        norms (a geometric mean of the norms).
    on_progress : called with a + 1 after row a (its a + 1 spectral norms): n(n+1)/2 in all.

    Returns
    -------
    M : (n, n) with M[a, b] = mean log10 ‖∂s_{times[a]}/∂s_{times[b]}‖₂ for times[b] ≤ times[a], NaN above
        the diagonal.
    """
    T = num_steps(cache)
    times = np.arange(T + 1) if times is None else np.asarray(times, dtype=np.int64)
    if (
        times.ndim != 1
        or times.size == 0
        or times.min() < 0
        or times.max() > T
        or (np.diff(times) <= 0).any()
    ):
        raise ValueError(f"times: expected increasing integers in 0..{T}")
    sel = slice(None) if batch is None else batch
    S, B, n = state_size(cell, params), cache.hs[:, sel].shape[1], times.size
    eye = np.broadcast_to(np.eye(S), (B, S, S))
    M = np.full((n, n), np.nan)
    # Row a from row a−1: ∂s_{t_a}/∂s_{t_b} = (∂s_{t_a}/∂s_{t_{a−1}}) ∂s_{t_{a−1}}/∂s_{t_b}, so the whole
    # grid costs T step products plus n²/2 matrix products. Every matrix is kept Frobenius-normalised
    # with its log10 scale beside it (see jacobian_products).
    mats: list[np.ndarray] = []
    scales: list[np.ndarray] = []
    for a in range(n):
        if a > 0:
            seg, seg_scale = eye.copy(), np.zeros(B)
            for k in range(int(times[a - 1]), int(times[a])):
                seg, seg_scale = _renormalise(step_jacobian(cell, cache, params, k)[sel] @ seg, seg_scale)
            grown = [_renormalise(seg @ m, seg_scale + sc) for m, sc in zip(mats, scales, strict=True)]
            mats, scales = [g[0] for g in grown], [g[1] for g in grown]
        mats.append(eye.copy())
        scales.append(np.zeros(B))
        spec = spectral_norm(np.stack(mats))  # (a+1, B)
        with np.errstate(divide="ignore"):
            M[a, : a + 1] = (np.stack(scales) + np.log10(spec)).mean(axis=1)
        if on_progress is not None:
            on_progress(a + 1)
    return M
