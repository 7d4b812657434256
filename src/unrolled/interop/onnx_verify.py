"""Checking an exported ONNX file against unrolled: run both on the same random inputs with onnxruntime and
report, per output, max |Δ| / max(1, max |unrolled's value|) — an error relative to the values' scale, so
the same bound holds for logits near 50 and for states near 0.1 (float32 has ~7 digits either way).

``onnxruntime`` is optional: ``pip install -e ".[onnx]"`` in the clone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unrolled._optional import install_hint

T_VERIFY, B_VERIFY = 9, 4  # the random batch: T steps, B sequences of lengths T, 5, 2, 1
LENGTHS = (T_VERIFY, 5, 2, 1)


def _session(path: Path):
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError(f"--verify needs onnxruntime: {install_hint('onnx', 'onnxruntime')}") from e
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(sess, feeds: dict) -> dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    return dict(zip(names, sess.run(None, {k: v for k, v in feeds.items() if k in wanted}), strict=True))


def relative_error(actual: np.ndarray, desired: np.ndarray) -> float:
    """max |actual − desired| / max(1, max |desired|), in float64."""
    desired = np.asarray(desired, dtype=np.float64)
    scale = max(1.0, float(np.abs(desired).max())) if desired.size else 1.0
    return float(np.abs(np.asarray(actual, dtype=np.float64) - desired).max(initial=0.0)) / scale


def verify_sequence_model(
    model, path: str | Path, *, lengths: bool = True, initial_state: bool = False, seed: int = 0
) -> dict[str, float]:
    """Relative errors of ``y`` and the final states (``h_n``, ``c_n``) of the file at ``path``
    (written by :func:`unrolled.interop.onnx.export` with the same flags) against ``model``.

    The batch: (T, B) = (9, 4) random token ids or float32 features, lengths 9, 5, 2, 1 when the graph
    takes them, random initial states when it takes them.
    """
    sess = _session(Path(path))
    rng = np.random.default_rng(seed)
    T, B = T_VERIFY, B_VERIFY
    c = model.config
    if model.embed is not None:
        x = rng.integers(0, c.vocab_size, (T, B))
    else:
        x = rng.standard_normal((T, B, c.input_size)).astype(np.float32)
    lens = np.array(LENGTHS) if lengths else None
    LD = c.num_layers * (2 if c.bidirectional else 1)
    names = ("h", "c") if c.cell == "lstm" else ("h",)
    states = [rng.standard_normal((LD, B, c.hidden_size)).astype(np.float32) for _ in names]
    feeds = {"x": x}
    if lens is not None:
        feeds["lengths"] = lens.astype(np.int32)
    state0 = None
    if initial_state:
        feeds.update({f"{n}0": s for n, s in zip(names, states, strict=True)})
        cast = tuple(s.astype(model.dtype) for s in states)
        state0 = cast if c.cell == "lstm" else cast[0]
    model.eval()
    y, final = model(x if model.embed is not None else x.astype(model.dtype), state0, lengths=lens)
    finals = final if c.cell == "lstm" else (final,)
    got = _run(sess, feeds)
    err = {"y": relative_error(got["y"], y)}
    err.update({f"{n}_n": relative_error(got[f"{n}_n"], f) for n, f in zip(names, finals, strict=True)})
    return err


def verify_seq2seq(model, encoder: str | Path, decoder: str | Path, *, steps: int = 4, seed: int = 0):
    """Relative errors of the encoder's outputs and of ``steps`` decoder steps (logits, attention, state),
    each graph against :class:`~unrolled.seq2seq.Seq2Seq` ``model``.

    The batch: (S, B) = (9, 4) random source ids with lengths 9, 5, 2, 1; random previous tokens at each
    step. unrolled and onnxruntime each carry their own state from step to step, so the errors include any
    that build up along the way.

    Returns
    -------
    ({encoder output: error}, {decoder output: largest error over the steps}).
    """
    enc_sess, dec_sess = _session(Path(encoder)), _session(Path(decoder))
    rng = np.random.default_rng(seed)
    c = model.config
    src = rng.integers(0, c.src_vocab_size, (T_VERIFY, B_VERIFY))
    lens = np.array(LENGTHS)
    model.eval()
    enc = model.encode(src, lens)
    got = _run(enc_sess, {"src": src, "src_lengths": lens.astype(np.int32)})
    want = dict(zip(("h", "c"), enc.state0.rnn, strict=False))
    if model.attention is not None:
        want.update(memory=enc.memory.values, keys=enc.memory.keys, mask=enc.memory.mask)
    if c.input_feeding:
        want["feed"] = enc.state0.feed
    enc_err = {k: relative_error(got[k], v) for k, v in want.items()}
    feeds, state = dict(got), enc.state0
    dec_err: dict[str, float] = {}
    for _ in range(steps):
        y_prev = rng.integers(0, c.tgt_vocab_size, B_VERIFY)
        out = model.decode_step(y_prev, state, enc.memory)
        step = _run(dec_sess, {**feeds, "y_prev": y_prev})
        want = {
            "logits": out.logits,
            **{f"{k}_n": s for k, s in zip(("h", "c"), out.state.rnn, strict=False)},
        }
        if c.input_feeding:
            want["feed_n"] = out.state.feed
        if out.alpha is not None:
            want["alpha"] = out.alpha
        for k, v in want.items():
            dec_err[k] = max(dec_err.get(k, 0.0), relative_error(step[k], v))
        feeds.update({k[: -len("_n")]: step[k] for k in step if k.endswith("_n")})
        state = out.state
    return enc_err, dec_err
