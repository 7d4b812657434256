"""The scans of h_t = a_t h_{t−1} + b_t equal the plain sequential recurrence (float64, tight): the NumPy
doubling scan, its reverse for BPTT, the paper's log-space form; and the blocked compiled cell (any number
of time blocks, with the fix-up pass) equals the sequential reference cell, forward and every gradient."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled import kernels
from unrolled.cells.minrnn import MinGRUCell, MinLSTMCell
from unrolled.kernels import scan


def sequential(a, b, h0):
    h, out = h0, []
    for t in range(a.shape[0]):
        h = a[t] * h + b[t]
        out.append(h)
    return np.stack(out)


def _coefficients(rng, T, shape=(3, 4)):
    a = rng.uniform(0.05, 0.999, (T, *shape))
    b = rng.standard_normal((T, *shape))
    return a, b


@pytest.mark.parametrize("T", [1, 2, 7, 64, 300])
def test_doubling_scan_equals_the_sequential_recurrence(T):
    rng = np.random.default_rng(T)
    a, b = _coefficients(rng, T)
    h0 = rng.standard_normal((3, 4))
    np.testing.assert_allclose(scan.scan_linear(a, b, h0), sequential(a, b, h0), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("T", [1, 5, 300])
def test_reverse_scan_is_the_bptt_recurrence(T):
    """δh_t = g_t + a_{t+1} δh_{t+1}, δh_{T−1} = g_{T−1} + end."""
    rng = np.random.default_rng(T)
    a, g = _coefficients(rng, T)
    end = rng.standard_normal((3, 4))
    want, carry = np.empty_like(g), end
    for t in range(T - 1, -1, -1):
        want[t] = g[t] + carry
        carry = a[t] * want[t]
    np.testing.assert_allclose(scan.scan_reverse(a, g, end), want, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("T", [1, 9, 2000])
def test_log_space_scan_equals_the_sequential_recurrence(T):
    """Positive b and h0 (zero h0: log 0 = −∞ is exact); over 2000 steps ∏a underflows far below 1e-300."""
    rng = np.random.default_rng(T)
    a, b = _coefficients(rng, T)
    b = np.abs(b)
    for h0 in (np.zeros((3, 4)), rng.uniform(0, 2, (3, 4))):
        with np.errstate(divide="ignore"):
            got = scan.scan_log(np.log(a), np.log(b), np.log(h0))
        np.testing.assert_allclose(got, sequential(a, b, h0), rtol=1e-10, atol=0)


def test_pick_runs_the_scans():
    for cell in (MinGRUCell(True), MinLSTMCell(False)):
        assert type(kernels.pick(cell, np.float64)) is scan.ScanMinCell
        with kernels.using(reference=True):
            assert kernels.pick(cell, np.float32) is cell
        with kernels.using(jit=False):
            assert type(kernels.pick(cell, np.float32)) is scan.ScanMinCell


numba = pytest.importorskip("numba", reason="the blocked scan is the compiled path (extra 'fast')")


@pytest.mark.parametrize("chunk_rows", [1024, 7], ids=["one-chunk", "chunks-of-2-steps"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("blocks", [1, 2, 3, 7])
@pytest.mark.parametrize("cell", [MinGRUCell(True), MinLSTMCell(False)], ids=["mingru-log", "minlstm-lin"])
def test_blocked_scan_equals_the_sequential_reference(cell, blocks, dtype, chunk_rows, monkeypatch):
    """Any number of time blocks, each worked through in chunks of steps (the e^{−k} temporaries)."""
    monkeypatch.setattr(scan, "CHUNK_ROWS", chunk_rows)
    rng = np.random.default_rng(blocks)
    T, B, I, H = 23, 3, 4, 5
    p = {
        "W_xh": rng.standard_normal((cell.gates * H, I)).astype(dtype),
        "b_h": rng.standard_normal(cell.gates * H).astype(dtype),
    }
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = np.abs(rng.standard_normal((B, H))).astype(dtype)
    mask = (np.arange(T)[:, None] < np.array([23, 11, 2])).astype(dtype)[:, :, None]
    d_hs = rng.standard_normal((T, B, H)).astype(dtype)
    d_hT = rng.standard_normal((B, H)).astype(dtype)
    fast = scan.BlockScanMinCell(cell)
    hs, (hT,), cache = fast.forward(x, (h0,), p, mask, blocks=blocks)
    assert len(cache.bounds) == blocks + 1
    hs_ref, (hT_ref,), cache_ref = cell.forward(x, (h0,), p, mask)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(hs, hs_ref, **tol)
    np.testing.assert_allclose(hT, hT_ref, **tol)
    dx, (dh0,), grads = fast.backward(d_hs, (d_hT,), cache, p)
    dx_ref, (dh0_ref,), grads_ref = cell.backward(d_hs, (d_hT,), cache_ref, p)
    np.testing.assert_allclose(dx, dx_ref, **tol)
    np.testing.assert_allclose(dh0, dh0_ref, **tol)
    assert grads.keys() == grads_ref.keys() == {"W_xh", "b_h"}
    for name in grads:
        np.testing.assert_allclose(grads[name], grads_ref[name], **tol)


def test_layer_in_float32_takes_the_blocked_path_and_matches_the_reference(monkeypatch):
    from unrolled import MinGRU, threads

    monkeypatch.setattr(scan, "MIN_BLOCK_MACS", 1)  # split even this small layer into time blocks
    rng = np.random.default_rng(0)
    layer = MinGRU(8, 16, num_layers=2, bidirectional=True, seed=0)
    x = rng.standard_normal((400, 4, 8)).astype(np.float32)
    d_out = rng.standard_normal((400, 4, 32)).astype(np.float32)
    results = []
    for reference in (True, False):
        with kernels.using(reference=reference):
            out, h_n = layer(x, lengths=[400, 399, 100, 1])
            dx, _ = layer.backward(d_out)
            results.append((out, h_n, dx, {k: v.copy() for k, v in layer.grads.items()}))
    cache = layer.last_caches()[(0, 0)]
    assert type(kernels.owner(layer.cell, cache)) is scan.BlockScanMinCell
    assert len(cache.bounds) - 1 == min(threads.workers_budget(), 400 // scan.MIN_BLOCK_STEPS)
    (o1, h1, dx1, g1), (o2, h2, dx2, g2) = results
    for got, want in [(o2, o1), (h2, h1), (dx2, dx1)] + [(g2[k], g1[k]) for k in g1]:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("log_space", [True, False], ids=["log", "linear"])
@pytest.mark.parametrize("cls", [MinGRUCell, MinLSTMCell])
def test_blocked_scan_keeps_saturated_gates_accurate_in_float32(cls, log_space):
    """Pre-activations of ±120 (e^{−k} overflows float32): the compiled gates, formed from e^{−k} by
    division, equal the float64 reference to float32 rounding, forward and backward."""
    cell = cls(log_space)
    rng = np.random.default_rng(9)
    T, B, I, H = 12, 2, 3, 4
    p64 = {"W_xh": 40 * rng.standard_normal((cell.gates * H, I)), "b_h": rng.standard_normal(cell.gates * H)}
    x64 = rng.standard_normal((T, B, I))
    x64[:, :, 0] = 3.0 * np.sign(x64[:, :, 0])  # many pre-activations far beyond ±88
    h0, d_hs = np.abs(rng.standard_normal((B, H))), rng.standard_normal((T, B, H))
    p32 = {n: v.astype(np.float32) for n, v in p64.items()}
    p64 = {n: v.astype(np.float64) for n, v in p32.items()}  # the same (float32-representable) weights
    x32 = x64.astype(np.float32)
    x64 = x32.astype(np.float64)
    fast = scan.BlockScanMinCell(cell)
    hs, _, cache = fast.forward(x32, (h0.astype(np.float32),), p32, None, blocks=2)
    hs_ref, _, cache_ref = cell.forward(x64, (h0,), p64, None)
    assert np.isfinite(hs).all()
    np.testing.assert_allclose(hs, hs_ref, rtol=2e-5, atol=2e-5 * np.abs(hs_ref).max())
    dx, (dh0,), grads = fast.backward(d_hs.astype(np.float32), (np.zeros((B, H), np.float32),), cache, p32)
    dx_ref, (dh0_ref,), grads_ref = cell.backward(d_hs, (np.zeros((B, H)),), cache_ref, p64)
    for got, want in [(dx, dx_ref), (dh0, dh0_ref)] + [(grads[n], grads_ref[n]) for n in grads]:
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(want).max()))


def _close_to_scale(got, want, rtol):
    """float32 agreement relative to the values' scale (max |want|), element by element."""
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("masked", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize(("T", "B", "blocks"), [(1001, 1, 3), (257, 2, 2), (61, 1, 7), (5, 3, 1)])
@pytest.mark.parametrize(
    "cell",
    [MinGRUCell(True), MinGRUCell(False), MinLSTMCell(True), MinLSTMCell(False)],
    ids=["mingru-log", "mingru-lin", "minlstm-log", "minlstm-lin"],
)
def test_fused_float32_kernels_equal_the_float64_reference(cell, T, B, blocks, masked):
    """The fused float32 kernels (polynomial exp, gates recomputed in the reversed loop, channel-split
    fix-up and carries) against the sequential float64 reference on the same float32 inputs: odd T not
    divisible by the blocks, B = 1, with and without lengths; forward, h_T, ∂L/∂x, ∂L/∂h0, ∂L/∂W, ∂L/∂b."""
    rng = np.random.default_rng(T + 10 * B + blocks)
    H, I = 24, 9
    p32 = {
        "W_xh": (0.6 * rng.standard_normal((cell.gates * H, I))).astype(np.float32),
        "b_h": rng.standard_normal(cell.gates * H).astype(np.float32),
    }
    x32 = (2 * rng.standard_normal((T, B, I))).astype(np.float32)
    h0_32 = np.abs(rng.standard_normal((B, H))).astype(np.float32)
    d_hs32 = rng.standard_normal((T, B, H)).astype(np.float32)
    d_hT32 = rng.standard_normal((B, H)).astype(np.float32)
    mask = None
    if masked:
        lengths = rng.integers(1, T + 1, B)
        lengths[0] = T
        mask = (np.arange(T)[:, None] < lengths).astype(np.float32)[:, :, None]
    p64 = {n: v.astype(np.float64) for n, v in p32.items()}
    fast = scan.BlockScanMinCell(cell)
    hs, (hT,), cache = fast.forward(x32, (h0_32,), p32, mask, blocks=blocks)
    assert len(cache.bounds) == blocks + 1 and hs.dtype == np.float32
    m64 = None if mask is None else mask.astype(np.float64)
    hs_ref, (hT_ref,), cache_ref = cell.forward(x32.astype(np.float64), (h0_32.astype(np.float64),), p64, m64)
    _close_to_scale(hs, hs_ref, 2e-5)
    _close_to_scale(hT, hT_ref, 2e-5)
    dx, (dh0,), grads = fast.backward(d_hs32, (d_hT32,), cache, p32)
    dx_ref, (dh0_ref,), grads_ref = cell.backward(
        d_hs32.astype(np.float64), (d_hT32.astype(np.float64),), cache_ref, p64
    )
    _close_to_scale(dx, dx_ref, 1e-4)
    _close_to_scale(dh0, dh0_ref, 1e-4)
    assert grads.keys() == grads_ref.keys() == {"W_xh", "b_h"}
    for name in grads:  # sums over T·B terms: float32 rounding grows with them
        _close_to_scale(grads[name], grads_ref[name], 3e-4)


def test_fused_kernels_without_bias_equal_the_reference():
    rng = np.random.default_rng(3)
    for cell in (MinGRUCell(True), MinLSTMCell(False)):
        T, B, I, H = 37, 2, 5, 6
        p = {"W_xh": rng.standard_normal((cell.gates * H, I))}
        x, h0 = rng.standard_normal((T, B, I)), np.abs(rng.standard_normal((B, H)))
        d_hs = rng.standard_normal((T, B, H))
        fast = scan.BlockScanMinCell(cell)
        hs, _, cache = fast.forward(x, (h0,), p, None, blocks=3)
        hs_ref, _, cache_ref = cell.forward(x, (h0,), p, None)
        np.testing.assert_allclose(hs, hs_ref, rtol=1e-12, atol=1e-12)
        dx, (dh0,), grads = fast.backward(d_hs, (np.zeros((B, H)),), cache, p)
        dx_ref, (dh0_ref,), grads_ref = cell.backward(d_hs, (np.zeros((B, H)),), cache_ref, p)
        assert grads.keys() == grads_ref.keys() == {"W_xh"}
        for got, want in [(dx, dx_ref), (dh0, dh0_ref), (grads["W_xh"], grads_ref["W_xh"])]:
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_float32_exponential_is_accurate_on_its_range():
    """The vectorised e^x of the float32 kernels: ≤ 1 ulp on [−87, 0], and e^{−87}'s value below."""
    from numba import njit

    from unrolled.kernels import _scan_jit

    @njit
    def exps(x, out):
        for i in range(x.shape[0]):
            out[i] = _scan_jit._exp_nonpos(x[i])

    x = np.concatenate([np.linspace(-87, 0, 200_001), [-1e-30, -0.0, -0.5]]).astype(np.float32)
    out = np.empty_like(x)
    exps(x, out)
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(out - want) / want) <= np.finfo(np.float32).eps
    low = np.array([-88.0, -200.0, -np.inf], np.float32)
    out = np.empty_like(low)
    exps(low, out)
    assert np.all(out == out[0]) and 0 < out[0] < 2e-38
