"""Parameter initialisers. Each takes the generator explicitly; none touches NumPy's global state."""

from __future__ import annotations

import numpy as np


def glorot_uniform(rng: np.random.Generator, fan_out: int, fan_in: int) -> np.ndarray:
    """U(−a, a) with a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010), shape (fan_out, fan_in)."""
    a = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=(fan_out, fan_in))


def lecun_uniform(rng: np.random.Generator, fan_out: int, fan_in: int) -> np.ndarray:
    """U(−a, a) with a = sqrt(3 / fan_in) (LeCun et al. 1998), shape (fan_out, fan_in): unit-variance
    outputs for unit-variance inputs. Drawn as U(−1, 1) · a, the draw seq2seq's weights were made with."""
    return rng.uniform(-1, 1, size=(fan_out, fan_in)) * np.sqrt(3.0 / fan_in)


def orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random (n, n) orthogonal matrix (QR of a Gaussian matrix, signs fixed so it is uniform).

    All its singular values are 1, so at the start ‖W_hh‖ = 1 and the linearised recurrence
    neither shrinks nor grows gradients by itself.
    """
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))[None, :]
