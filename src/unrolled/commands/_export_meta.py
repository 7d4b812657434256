"""What ``unrolled export`` writes into an ONNX file's metadata for each model kind, so that the file is
usable without unrolled: every value a string, lists and objects as JSON (``ensure_ascii=False``: the
characters themselves). The keys, and what they mean, are listed in docs/interop.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

APP = "unrolled.app"


def _json(v: Any) -> str:
    """JSON for a metadata value. ASCII-escaped, because a vocabulary may hold the <unk> character, a lone
    surrogate (U+DFFF) that UTF-8 — and so ONNX's string fields — cannot carry; json.loads restores it."""
    return json.dumps(v, ensure_ascii=True)


def _state_layout(model, suffix_in: str = "0") -> list[dict]:
    """The recurrent state a streaming caller carries: per tensor, graph input, graph output and shape."""
    c = model.config
    LD = c.num_layers * (2 if c.bidirectional else 1)
    names = ("h", "c") if c.cell == "lstm" else ("h",)
    return [
        {"input": f"{n}{suffix_in}", "output": f"{n}_n", "shape": [LD, "B", c.hidden_size]} for n in names
    ]


def app_metadata(ckpt: Path, app: str | None) -> tuple[Any, dict[str, str]]:
    """(SequenceModel, metadata) of the checkpoint ``ckpt`` saved by ``app`` (None: a bare model, no
    metadata beyond unrolled's own). Raises ValueError for an app whose model is not a SequenceModel."""
    from unrolled.checkpoint import load_model

    if app == "charlm":
        return _charlm(ckpt)
    if app == "classify":
        return _classifier(ckpt)
    if app == "forecast":
        return _forecaster(ckpt)
    model, _ = load_model(ckpt)
    return model, ({APP: app} if app else {})


def _charlm(ckpt: Path) -> tuple[Any, dict[str, str]]:
    from unrolled.apps import charlm

    model, vocab, meta = charlm.load(ckpt)
    sampling = charlm.SampleConfig()  # the defaults of `unrolled sample`
    # A vocabulary with an <unk> id (every model trained since it was reserved) lets a caller read unknown
    # characters as <unk> ("map"); an older one has none, and a caller must refuse them ("error").
    unk = vocab.unk_id
    unknown = {"policy": "error", "unk_id": None} if unk is None else {"policy": "map", "unk_id": int(unk)}
    state = _state_layout(model)
    shapes = ", ".join(f"{s['input']} {tuple(s['shape'])}".replace("'", "") for s in state)
    return model, {
        APP: "charlm",
        "unrolled.vocab": _json(list(vocab.chars)),
        "unrolled.unknown": _json(unknown),
        "unrolled.dtype": str(model.dtype),
        "unrolled.state": _json(state),
        "unrolled.default_prime": charlm.default_prime(vocab),
        "unrolled.sampling": _json({"temperature": sampling.temperature, "top_k": sampling.top_k}),
        "unrolled.io": (
            f"x (T, B) int64: ids of characters, positions in unrolled.vocab; {shapes}: the state, zeros to "
            "start. y (T, B, V): logits of the next character after each step; h_n (c_n): the state after "
            "step T, fed back as h0 (c0). Read the prime with T = P, then one character at a time (T = 1)."
        ),
    }


def _classifier(ckpt: Path) -> tuple[Any, dict[str, str]]:
    from unrolled.apps import classify

    clf, _, meta = classify.load(ckpt)
    md = {
        APP: "classify",
        "unrolled.labels": _json(list(clf.classes)),
        "unrolled.input": str(meta.get("kind")),
    }
    if clf.vocab is not None:  # text: character ids, 0 for a character not seen in training (and padding)
        md["unrolled.vocab"] = _json(list(clf.vocab.chars))
        md["unrolled.unknown"] = _json({"policy": "map", "unk_id": 0})
        x = "x (T, B) int64: ids of characters, positions in unrolled.vocab (0 = <unk>, also padding)"
    else:
        x = f"x (T, B, {clf.model.config.input_size}) float32: the features of each step"
    md["unrolled.io"] = (
        f"{x}; lengths (B,) int32. y (B, K): scores (logits) of the classes in the order of unrolled.labels; "
        "softmax gives the probabilities, argmax the predicted label."
    )
    return clf.model, md


def _forecaster(ckpt: Path) -> tuple[Any, dict[str, str]]:
    from unrolled.apps import forecast

    fc, cfg, meta = forecast.load(ckpt)
    columns = list(meta.get("columns", []))
    F = fc.model.config.input_size
    target = f"column 0 ({columns[0]!r})" if columns else "column 0"
    scaled = "each column scaled: (value − mean[j]) / std[j] with unrolled.scaler"
    if fc.difference:
        scaled = f"the first differences of the rows, {scaled} (fitted on the differences)"
    x = f"x (lookback = {fc.lookback}, B, {F}) float32: the last lookback rows, {scaled}"
    back = "back to units: y · std[0] + mean[0]"
    if fc.difference:
        back += ", then their cumulative sum added to the last observed value of the target"
    if fc.strategy == "direct":
        y = f"y (B, {fc.horizon}): the next {fc.horizon} steps of {target}, scaled; {back}"
    else:
        y = (
            f"y (B, {F}): the next row, every column scaled; append it to the window (dropping the oldest "
            f"row) and run again, horizon = {fc.horizon} times (or more); {target} {back}"
        )
    md = {
        APP: "forecast",
        "unrolled.scaler": _json(fc.scaler.to_dict()),
        "unrolled.columns": _json(columns),
        "unrolled.lookback": str(fc.lookback),
        "unrolled.horizon": str(fc.horizon),
        "unrolled.strategy": fc.strategy,
        "unrolled.difference": _json(bool(fc.difference)),
        "unrolled.io": f"{x}; lengths (B,) int32 (lookback for every row). {y}.",
    }
    return fc.model, md


def translation_metadata(tr) -> dict[str, str]:
    """The metadata of both graphs of a translation model (:class:`unrolled.apps.translate.Translator`)."""
    from unrolled.interop.onnx_seq2seq import state_layout
    from unrolled.seq2seq.text import SPECIALS

    return {
        APP: "translate",
        "unrolled.src_vocab": _json(tr.src_vocab.to_list()),
        "unrolled.tgt_vocab": _json(tr.tgt_vocab.to_list()),
        "unrolled.specials": _json({s: i for i, s in enumerate(SPECIALS)}),
        "unrolled.tokenizer": tr.tokenizer,
        "unrolled.state": _json(state_layout(tr.model)),
        "unrolled.io": (
            "encoder: src (S, B) int64 source token ids, each sentence followed by <eos>, padded with <pad>; "
            "src_lengths (B,) int32 (with the <eos>). decoder, once per output token: y_prev (B,) int64 "
            "(<bos> first), the state (unrolled.state: first the encoder's outputs of the same names, then "
            "the step's *_n outputs), memory/keys/mask from the encoder. logits (B, V): the next token; "
            "greedy: argmax until <eos>, at most 2·S + 10 tokens."
        ),
    }
