"""Non-recurrent building blocks: the Linear output head y_t = W_hy h_t + b_y, the token Embedding,
output functions, losses.

Each loss returns ``(loss, gradient w.r.t. its input)``, so a model's backward starts from it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from unrolled._checks import check_array, positive_int
from unrolled.init import glorot_uniform


class Linear:
    """y = x W_yᵀ + b_y over the last axis: W (out_features, in_features), b (out_features,).

    As the RNN output head this is y_t = W_hy h_t + b_y applied at every time step at once.
    Parameter names: ``W``, ``b``. ``init(rng, out_features, in_features)`` draws W (default Glorot-uniform;
    see :mod:`unrolled.init`); b starts at zero.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype=np.float32,
        seed: int | np.random.Generator | None = None,
        init: Callable[[np.random.Generator, int, int], np.ndarray] = glorot_uniform,
    ) -> None:
        self.in_features = positive_int("in_features", in_features)
        self.out_features = positive_int("out_features", out_features)
        self.dtype = np.dtype(dtype)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.params = {"W": init(rng, self.out_features, self.in_features).astype(self.dtype)}
        if bias:
            self.params["b"] = np.zeros(out_features, dtype=self.dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._x: np.ndarray | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (..., in_features) -> y (..., out_features)."""
        if not isinstance(x, np.ndarray) or x.ndim == 0:
            raise TypeError(f"x: expected a numpy.ndarray (..., {self.in_features}), got {type(x).__name__}")
        check_array("x", x, (None,) * (x.ndim - 1) + (self.in_features,), self.dtype)
        self._x = x
        y = x @ self.params["W"].T
        if "b" in self.params:
            y += self.params["b"]
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy (..., out_features) -> dx (..., in_features); fills grads (W: Σ dyᵀ x, b: Σ dy)."""
        if self._x is None:
            raise RuntimeError("backward: called before forward (no forward pass to differentiate)")
        x = self._x
        check_array("dy", dy, x.shape[:-1] + (self.out_features,), self.dtype)
        x2, dy2 = x.reshape(-1, self.in_features), dy.reshape(-1, self.out_features)
        self.grads["W"] = dy2.T @ x2
        if "b" in self.params:
            self.grads["b"] = dy2.sum(axis=0)
        return dy @ self.params["W"]


class Embedding:
    """Token ids → vectors: forward e = W[ids], backward ∂L/∂W[v] = Σ_{positions with id v} ∂L/∂e.

    Parameters
    ----------
    num_embeddings : V, the vocabulary size.  embedding_dim : E.
    dtype : float32 or float64.  seed : int or Generator for the N(0, 1) initialisation (torch's).
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        dtype=np.float32,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        self.num_embeddings = positive_int("num_embeddings", num_embeddings)
        self.embedding_dim = positive_int("embedding_dim", embedding_dim)
        self.dtype = np.dtype(dtype)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.params = {"W": rng.standard_normal((self.num_embeddings, self.embedding_dim)).astype(self.dtype)}
        self.grads = {"W": np.zeros_like(self.params["W"])}
        self._ids: np.ndarray | None = None

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        return self.forward(ids)

    def forward(self, ids: np.ndarray) -> np.ndarray:
        """ids: integer array of any shape (...), values in 0..V−1 -> (..., E)."""
        if not isinstance(ids, np.ndarray) or not np.issubdtype(ids.dtype, np.integer):
            got = ids.dtype.name if isinstance(ids, np.ndarray) else type(ids).__name__
            raise ValueError(f"ids: expected an integer ndarray of token ids, got {got}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_embeddings):
            raise ValueError(
                f"ids: expected token ids in 0..{self.num_embeddings - 1}, got {ids.min()}..{ids.max()}"
            )
        self._ids = ids
        return self.params["W"][ids]

    def backward(self, d: np.ndarray) -> None:
        """d (..., E) = ∂L/∂e; scatter-adds into ``grads["W"]`` (a repeated id sums its gradients)."""
        if self._ids is None:
            raise RuntimeError("backward: called before forward (no forward pass to differentiate)")
        if not isinstance(d, np.ndarray) or d.shape != self._ids.shape + (self.embedding_dim,):
            got = d.shape if isinstance(d, np.ndarray) else type(d).__name__
            raise ValueError(f"d: expected shape {self._ids.shape + (self.embedding_dim,)}, got {got}")
        gW = np.zeros_like(self.params["W"])
        np.add.at(gW, self._ids.ravel(), d.reshape(-1, self.embedding_dim).astype(self.dtype, copy=False))
        self.grads["W"] = gW


# --------------------------------------------------------------------------- output functions
def sigmoid(a: np.ndarray) -> np.ndarray:
    """Elementwise 1 / (1 + e^{−a}), computed without overflow."""
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def softmax(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """exp(a_k) / Σ_j exp(a_j) along `axis`, shifted by the max for stability."""
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """a_k − log Σ_j exp(a_j), stable, in a's floating dtype (float32 stays float32).

    Peak memory: the result and one temporary the size of `a` (the normaliser is subtracted in place).
    """
    s = a - a.max(axis=axis, keepdims=True)
    if not np.issubdtype(s.dtype, np.inexact):
        s = s.astype(np.float64)  # integer scores: the float64 result NumPy's promotion gave before
    s -= np.log(np.exp(s).sum(axis=axis, keepdims=True))
    return s


# --------------------------------------------------------------------------- losses
def _step_mask(mask, lead_shape: tuple, dtype) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != lead_shape:
        raise ValueError(f"mask: expected shape {lead_shape} (one flag per step), got {m.shape}")
    m = m.astype(dtype)
    if m.sum() == 0:
        raise ValueError("mask: no valid step (the mean would be over nothing)")
    return m


def mse(pred: np.ndarray, target: np.ndarray, mask=None) -> tuple[float, np.ndarray]:
    """Mean squared error (1/N) Σ (pred − target)² over valid elements; returns (loss, ∂loss/∂pred).

    mask : optional (...) of pred.shape[:-1] (e.g. (T, B)): 1 where a step counts, 0 where not.
    """
    check_array("target", target, pred.shape, pred.dtype)
    diff = pred - target
    m = _step_mask(mask, pred.shape[:-1], pred.dtype)
    if m is None:
        n = diff.size
        return float((diff * diff).sum() / n), (2.0 / n) * diff
    diff = diff * m[..., None]
    n = m.sum() * pred.shape[-1]
    return float((diff * diff).sum() / n), (diff * (2.0 / n)).astype(pred.dtype)


def cross_entropy(logits: np.ndarray, target: np.ndarray, mask=None, output: str = "softmax"):
    """Cross-entropy of the softmax (or sigmoid) output y = f(logits); returns (loss, ∂loss/∂logits).

    output="softmax": logits (..., K), target integer class ids (...); loss = mean over valid steps of
        −log softmax(logits)[target]; gradient (softmax(logits) − onehot(target)) / N.
    output="sigmoid": target in [0, 1] shaped like logits (independent binary outputs);
        loss = mean over valid elements of −[t log σ(a) + (1 − t) log(1 − σ(a))]; gradient (σ(a) − t) / N.
    mask : optional (...) = logits.shape[:-1]: 1 where a step counts.
    """
    if output == "softmax":
        target = np.asarray(target)
        if target.shape != logits.shape[:-1]:
            raise ValueError(f"target: expected shape {logits.shape[:-1]} (class ids), got {target.shape}")
        if not np.issubdtype(target.dtype, np.integer):
            raise ValueError(f"target: expected integer class ids, got dtype {target.dtype.name}")
        K = logits.shape[-1]
        if target.size and (target.min() < 0 or target.max() >= K):
            raise ValueError(f"target: expected class ids in 0..{K - 1}, got {target.min()}..{target.max()}")
        m = _step_mask(mask, logits.shape[:-1], logits.dtype)
        # In the logits' dtype, and in place: besides the logits, at most two arrays of their size
        # (log p, then p − onehot, and the temporary inside log_softmax) — for a language model these
        # (T, B, V) arrays are the largest of a step, so no float64 copy and no second gradient copy.
        logp = log_softmax(logits)
        nll = -np.take_along_axis(logp, target[..., None], axis=-1)[..., 0]
        grad = np.exp(logp, out=logp)
        np.put_along_axis(grad, target[..., None], np.take_along_axis(grad, target[..., None], -1) - 1, -1)
        if m is None:
            n = nll.size
            grad /= n
            return float(nll.sum() / n), grad.astype(logits.dtype, copy=False)
        n = m.sum()
        grad *= m[..., None] / n
        return float((nll * m).sum() / n), grad.astype(logits.dtype, copy=False)
    if output == "sigmoid":
        check_array("target", target, logits.shape, logits.dtype)
        # −[t log σ(a) + (1−t) log(1−σ(a))] = softplus(a) − t a, with softplus(a) = max(a,0) + log1p(e^{−|a|})
        loss_el = np.maximum(logits, 0) + np.log1p(np.exp(-np.abs(logits))) - target * logits
        grad = sigmoid(logits) - target
        m = _step_mask(mask, logits.shape[:-1], logits.dtype)
        if m is None:
            n = loss_el.size
            return float(loss_el.sum() / n), (grad / n).astype(logits.dtype)
        n = m.sum() * logits.shape[-1]
        return float((loss_el * m[..., None]).sum() / n), (grad * (m[..., None] / n)).astype(logits.dtype)
    raise ValueError(f"output: expected 'softmax' or 'sigmoid', got {output!r}")
