"""Memory of the character language model: bounded on any input by the documented formula
(:func:`unrolled.apps.charlm.memory_bound`), measured as the peak resident set of a child process.

Each measured test runs the same code twice in fresh interpreters: once on a tiny input (R0, the
interpreter with NumPy and the kernels once they have run) and once on the large one, and compares the
difference with the bound. Wall time of the whole file: about 25 s on a loaded 2-core machine (the
100 MB text ≈ 8 s of it: streaming it to ids is the cost).
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from unrolled.apps.charlm import CharLMConfig, evaluate, lm, memory_bound
from unrolled.models import ModelConfig, SequenceModel
from unrolled.nn import cross_entropy, log_softmax
from unrolled.tbptt import TokenStreams

from conftest import assert_close

MiB = 1 << 20
needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")


def peak_rss(code: str) -> int:
    """Peak resident set (VmHWM) in bytes of a fresh interpreter that runs `code`."""
    probe = "\nprint([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])"
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code) + probe], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split()[-1]) * 1024


FIT = """
from unrolled.apps.charlm import CharLMConfig, fit
cfg = CharLMConfig(**{cfg!r})
fit(cfg, [{text!r}], {out!r}, progress=False, log=lambda *a: None)
"""


def fit_peak(cfg: dict, text: Path, out: Path) -> int:
    return peak_rss(FIT.format(cfg=cfg, text=str(text), out=str(out)))


def write_chars(path: Path, codes: np.ndarray, n: int, seed: int = 0) -> None:
    """A UTF-8 text of n characters: every code point of `codes` once, then random ones of them."""
    rng = np.random.default_rng(seed)
    picks = np.concatenate([codes, rng.choice(codes, n - len(codes))]).astype(np.uint32)
    path.write_bytes(picks.tobytes().decode("utf-32-le").encode("utf-8"))


@needs_proc
def test_a_70000_character_alphabet_trains_and_validates_within_the_bound(tmp_path):
    # CJK ideographs, Hangul and CJK extension B: 70,000 distinct characters (ids need 4 bytes each).
    codes = np.concatenate(
        [np.arange(0x4E00, 0xA000), np.arange(0xAC00, 0xD7A4), np.arange(0x20000, 0x2A6E0)]
    )
    codes = codes[:70_000]
    write_chars(tmp_path / "big.txt", codes, 150_000)
    write_chars(tmp_path / "tiny.txt", codes[:2], 200)
    cfg = dict(hidden=16, embed=8, layers=1, batch=4, seq_len=16, steps=2, val_every=2)
    r0 = fit_peak(cfg, tmp_path / "tiny.txt", tmp_path / "r0")
    peak = fit_peak(cfg, tmp_path / "big.txt", tmp_path / "big")
    bound = memory_bound(CharLMConfig(**cfg), 150_000, 70_000)
    # Measured: R0 + ~96 MB against a bound of R0 + ~290 MB. Before blocked scoring, validation alone
    # allocated (200, 64, 70,000) float64 arrays of 6.7 GiB each.
    assert peak - r0 <= bound, (
        f"peak {peak / MiB:.0f} MiB, R0 {r0 / MiB:.0f} MiB, bound R0 + {bound / MiB:.0f}"
    )


@needs_proc
def test_a_100_mb_text_with_one_stream_of_one_step_stays_within_the_bound(tmp_path):
    block = np.random.default_rng(0).integers(32, 127, MiB, dtype=np.uint8).tobytes()
    with open(tmp_path / "big.txt", "wb") as f:
        for _ in range(100):  # 100 MiB of printable ASCII, written 1 MiB at a time
            f.write(block)
    (tmp_path / "tiny.txt").write_bytes(block[:300])
    cfg = dict(hidden=8, embed=4, layers=1, batch=1, seq_len=1, steps=3, val_every=3, val_chars=1000)
    r0 = fit_peak(cfg, tmp_path / "tiny.txt", tmp_path / "r0")
    peak = fit_peak(cfg, tmp_path / "big.txt", tmp_path / "big")
    bound = memory_bound(CharLMConfig(**cfg), 100 * MiB, 95)
    # Measured: R0 + ~103 MB (the ids: 1 byte per character) against a bound of R0 + ~155 MB. Before,
    # the list of (start, stop) chunks alone took ~125 bytes per character (~13 GB here).
    assert peak - r0 <= bound, (
        f"peak {peak / MiB:.0f} MiB, R0 {r0 / MiB:.0f} MiB, bound R0 + {bound / MiB:.0f}"
    )


EVAL = """
import numpy as np
from unrolled.apps.charlm import evaluate
from unrolled.models import ModelConfig, SequenceModel
model = SequenceModel(ModelConfig(vocab_size={V}, embed_dim=16, hidden_size=32, num_layers=1, seed=0))
evaluate(model, np.random.default_rng(0).integers(0, {V}, {N}).astype(np.uint16))
"""


@needs_proc
def test_evaluate_over_5000_characters_peaks_far_below_a_gigabyte():
    r0 = peak_rss(EVAL.format(V=2, N=100))
    peak = peak_rss(EVAL.format(V=5000, N=20_000))
    # Measured: R0 + ~50 MB (before: 1.96 GB in all, float64 (200, 64, 5000) arrays). The bound: a block
    # of scored logits and its temporaries, the model, one chunk through the stack, with room to spare.
    assert peak - r0 < 96 * MiB, f"peak {peak / MiB:.0f} MiB, R0 {r0 / MiB:.0f} MiB"
    assert peak < 1 << 30


# --------------------------------------------------------------------------- evaluation, in process
def _reference_nats(model: SequenceModel, ids: np.ndarray, B: int) -> float:
    """The former evaluation: whole streams through model.forward, float64 log-softmax of all logits."""
    n = len(ids) - 1
    L = math.ceil(n / B)
    total = 0.0
    for b in range(B):
        part = ids[b * L : min((b + 1) * L, n) + 1].astype(np.int64)
        y, _ = model.eval().forward(part[:-1, None])
        logp = log_softmax(y[:, 0].astype(np.float64))
        total += -logp[np.arange(len(part) - 1), part[1:]].sum()
    return total / n


def test_float32_evaluation_equals_the_float64_reference_up_to_float32_rounding():
    V = 300
    model = SequenceModel(ModelConfig(vocab_size=V, embed_dim=8, hidden_size=16, num_layers=2, seed=3))
    ids = np.random.default_rng(2).integers(0, V, 2001).astype(np.uint16)
    want = _reference_nats(model, ids, B=4)
    got = evaluate(model, ids, batch=4, seq_len=50)
    assert abs(got - want) <= 1e-5 * want  # measured: ~1e-8 relative


@pytest.mark.parametrize("block_bytes", [1, 8 * 7 * 5, lm.SCORE_BLOCK_BYTES])
def test_scoring_in_blocks_of_any_size_gives_the_same_result(monkeypatch, block_bytes):
    V = 7
    model = SequenceModel(ModelConfig(vocab_size=V, embed_dim=5, hidden_size=9, dtype="float64", seed=1))
    ids = np.random.default_rng(4).integers(0, V, 333).astype(np.uint8)
    want = _reference_nats(model, ids, B=3)
    monkeypatch.setattr(lm, "SCORE_BLOCK_BYTES", block_bytes)  # 1 byte: one position per block
    assert evaluate(model, ids, batch=3, seq_len=17) == pytest.approx(want, rel=1e-12)


def test_evaluate_refuses_a_model_that_is_not_a_language_model():
    model = SequenceModel(ModelConfig(input="dense", input_size=3, output_size=4, output="last"))
    with pytest.raises(ValueError, match="model: expected a language model"):
        evaluate(model, np.arange(10) % 4)


# --------------------------------------------------------------------------- training path
def test_token_streams_hold_no_per_chunk_python_objects():
    ids = np.zeros(1_000_001, dtype=np.uint8)
    tracemalloc.start()
    try:
        streams = TokenStreams(ids, batch_size=1, k=1)  # a million chunks
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(streams) == 1_000_000
    assert peak < 64 * 1024  # a list of the chunks' bounds was ~100 MB
    assert streams.bounds(999_999) == (999_999, 1_000_000) == streams.bounds(-1)


def test_token_stream_chunks_tile_each_stream_and_the_last_may_be_shorter():
    streams = TokenStreams(np.arange(24) % 5, batch_size=2, k=5)  # L = 11: chunks 5, 5, 1
    assert len(streams) == 3
    assert [streams.bounds(i) for i in range(3)] == [(0, 5), (5, 10), (10, 11)]
    assert streams[2].x.shape == (1, 2)
    for bad in (3, -4, 1.0, True):
        with pytest.raises(IndexError, match="out of range"):
            streams.bounds(bad)


def test_cross_entropy_keeps_float32_and_allocates_two_logits_sized_arrays_at_most():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((20, 8, 5000)).astype(np.float32)
    target = rng.integers(0, 5000, (20, 8))
    tracemalloc.start()
    try:
        loss, grad = cross_entropy(logits, target)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert grad.dtype == np.float32
    assert peak < 2.2 * logits.nbytes  # log p (then the gradient, in place) and one temporary; was 4
    # and the values are those of the float64 computation, to float32 rounding
    want_loss, want_grad = cross_entropy(logits.astype(np.float64), target)
    assert loss == pytest.approx(want_loss, rel=1e-6)
    assert_close(grad, want_grad, 1e-5)


def test_log_softmax_keeps_the_float_dtype_and_widens_integers_to_float64():
    a = np.array([[1, 2, 3]])
    assert log_softmax(a).dtype == np.float64
    np.testing.assert_allclose(log_softmax(a), np.log(np.exp(a) / np.exp(a).sum()), rtol=1e-12)
    assert log_softmax(a.astype(np.float32)).dtype == np.float32


def test_memory_bound_grows_with_the_text_by_the_id_width_only():
    cfg = CharLMConfig(hidden=32, embed=8, layers=1, batch=4, seq_len=10)
    assert memory_bound(cfg, 2_000_000, 95) - memory_bound(cfg, 1_000_000, 95) == 1_000_000
    assert memory_bound(cfg, 2_000_000, 70_000) - memory_bound(cfg, 1_000_000, 70_000) == 4_000_000
    with pytest.raises(ValueError, match="vocab_size"):
        memory_bound(cfg, 10, 0)


# --------------------------------------------------------------------------- loading
def _saved(tmp_path: Path, rows: int, vocab: str) -> Path:
    from unrolled.checkpoint import save_model

    model = SequenceModel(ModelConfig(vocab_size=rows, embed_dim=3, hidden_size=4, seed=0))
    return save_model(tmp_path / "ckpt", model, {"app": "charlm", "vocab": vocab})


def test_load_compares_the_meta_vocabulary_with_the_embedding_and_head_rows(tmp_path):
    from unrolled.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="vocabulary has 4 characters, the model's embedding 3 rows"):
        lm.load(_saved(tmp_path, 3, "abcd"))
    model, vocab, _ = lm.load(_saved(tmp_path, 4, "abcd"))
    assert vocab.chars == ("a", "b", "c", "d") and model.config.vocab_size == 4


def test_load_refuses_a_vocabulary_larger_than_unicode_before_decoding_it(tmp_path):
    from unrolled.apps.charlm.text import MAX_VOCAB, TextError, Vocabulary
    from unrolled.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="1,114,113 characters, more than the 1,114,112 Unicode"):
        lm.load(_saved(tmp_path, 3, "a" * (MAX_VOCAB + 1)))
    with pytest.raises(TextError, match="vocabulary: expected at most 1,114,112 characters, got 1,114,113"):
        Vocabulary.from_json("a" * (MAX_VOCAB + 1))
