"""``unrolled export DIR --onnx OUT.onnx``: a saved model as ONNX graphs with native RNN/LSTM/GRU ops, with
what a caller needs to use them (vocabulary, labels, scaler, state layout) in the files' metadata.

Per model kind (the ``app`` of the checkpoint's meta; docs/interop.md lists every metadata key):

- ``charlm``: one graph with state inputs and outputs and no lengths: ``x`` (T, B) ids, ``h0`` [``c0``]
  -> ``y`` (T, B, V) logits, ``h_n`` [``c_n``]. Called with the prime (T = P) and then one character at a
  time (T = 1), carrying the state, it is the step graph of generation (examples/onnx_generate.py).
- ``classify``, ``forecast`` and a bare model: the sequence graph, as ``--no-lengths`` / ``--initial-state``
  ask; labels or scaler, lookback, horizon and the output's meaning in the metadata.
- ``translate``: ``X.encoder.onnx`` and ``X.decoder.onnx`` for ``--onnx X.onnx``
  (:mod:`unrolled.interop.onnx_seq2seq`).
"""

from __future__ import annotations

import json
from pathlib import Path

from unrolled.commands._common import CLIError, add_checkpoint_option, model_choice, say_model

VERIFY_TOL = 1e-5  # max |Δ| relative to the values' scale (float32 round-off, different summation orders)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a saved model to ONNX (native RNN/LSTM/GRU operators), vocabulary and labels included",
        description=(
            "Export the model of a run or checkpoint directory as ONNX. Sequence models (embedding or dense "
            "input -> recurrent stack -> linear head): inputs x (T, B) int64 token ids or (T, B, I) float32 "
            "features and lengths (B,) int32; outputs y and the final states h_n (and c_n). A character "
            "model's graph takes and returns its state (h0/c0 -> h_n/c_n) and no lengths, for step-by-step "
            "generation. A translation model becomes OUT.encoder.onnx and OUT.decoder.onnx (one decoder "
            "step). The metadata holds the vocabulary, labels, scaler and state layout (docs/interop.md)."
        ),
    )
    p.add_argument(
        "model",
        metavar="DIR",
        help="a run directory (its best/, else its last/, or the model saved at its top) or a checkpoint",
    )
    add_checkpoint_option(p)
    p.add_argument("--onnx", metavar="OUT.onnx", required=True, help="where to write the ONNX file")
    p.add_argument(
        "--no-lengths", action="store_true", help="no lengths input: every sequence runs all T steps"
    )
    p.add_argument(
        "--initial-state", action="store_true", help="add h0 (and c0) inputs (L·D, B, H); default zeros"
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="run the file(s) with onnxruntime on a random batch of varied lengths and compare with unrolled",
    )
    p.set_defaults(func=run)


def _app(ckpt: Path) -> str | None:
    """The ``app`` named in a checkpoint's meta.json (None for a bare model or an unreadable file: the
    loader then says what is wrong)."""
    try:
        meta = json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    inner = meta.get("meta") if isinstance(meta, dict) else None
    app = inner.get("app") if isinstance(inner, dict) else None
    return app if isinstance(app, str) else None


def run(args) -> int:
    src = Path(args.model)
    if not src.is_dir():
        raise CLIError(f"{src}: not a directory (expected a run or checkpoint directory)")
    out = Path(args.onnx)
    if not out.parent.is_dir():
        raise CLIError(f"cannot write {out}: directory {out.parent} does not exist")
    choice = model_choice(args, src)  # a run directory: its best/ (else last/) checkpoint
    ckpt = choice.path
    from unrolled.checkpoint import is_checkpoint

    if not is_checkpoint(ckpt):  # refused before the 'using' line, so a refusal is one line
        raise CLIError(f"{src}: not a checkpoint, nor a run directory with best/ or last/")
    say_model(choice)
    if _app(ckpt) == "translate":
        return _export_translation(ckpt, out, args.verify)
    return _export_sequence_model(ckpt, out, args)


def _export_sequence_model(ckpt: Path, out: Path, args) -> int:
    from unrolled.commands._export_meta import app_metadata
    from unrolled.interop.onnx import export
    from unrolled.interop.onnx_verify import verify_sequence_model

    model, metadata = app_metadata(ckpt, _app(ckpt))
    lengths, initial_state = not args.no_lengths, args.initial_state
    if metadata.get("unrolled.app") == "charlm":  # the step graph: the state in and out, all rows T steps
        lengths, initial_state = False, True
    export(model, out, lengths=lengths, initial_state=initial_state, metadata=metadata)
    c = model.config
    kind = f"{c.cell.upper()} x{c.num_layers}" + (" bidirectional" if c.bidirectional else "")
    app = metadata.get("unrolled.app", "model")
    print(
        f"wrote {out} ({out.stat().st_size / 1024:.1f} KiB): {app}, {kind}, output={c.output}, opset 17, "
        f"float32; metadata: {', '.join(k for k in metadata if k != 'unrolled.app') or 'none'}"
    )
    if args.verify:
        err = verify_sequence_model(model, out, lengths=lengths, initial_state=initial_state)
        _report(f"{out.name}", err, "random batch T=9, B=4" + (", lengths 9,5,2,1" if lengths else ""))
    return 0


def _export_translation(ckpt: Path, out: Path, verify: bool) -> int:
    from unrolled.apps import translate
    from unrolled.commands._export_meta import translation_metadata
    from unrolled.interop.onnx_seq2seq import export_seq2seq
    from unrolled.interop.onnx_verify import verify_seq2seq

    tr, _ = translate.load(ckpt)
    enc, dec = export_seq2seq(tr.model, out, translation_metadata(tr))
    c = tr.model.config
    size = (enc.stat().st_size + dec.stat().st_size) / 1024
    print(
        f"wrote {enc} and {dec} ({size:.1f} KiB): translate, {c.cell.upper()} encoder x{c.enc_layers}"
        f"{' bidirectional' if c.bidirectional else ''}, decoder x{c.dec_layers}, attention {c.attention}, "
        "opset 17, float32"
    )
    if verify:
        enc_err, dec_err = verify_seq2seq(tr.model, enc, dec)
        _report(enc.name, enc_err, "random sources S=9, B=4, lengths 9,5,2,1")
        _report(dec.name, dec_err, "4 steps from the encoder's state, random previous tokens")
    return 0


def _report(name: str, err: dict[str, float], what: str) -> None:
    """One line of errors relative to scale, per output; CLIError when one is above :data:`VERIFY_TOL`."""
    parts = ", ".join(f"max |Δ{k}| {v:.1e}" for k, v in err.items())
    print(f"onnxruntime vs unrolled, {name} ({what}), relative to scale: {parts}")
    worst = max(err, key=err.get)
    if not err[worst] <= VERIFY_TOL:
        raise CLIError(
            f"verification failed: {name}: max |Δ{worst}| = {err[worst]:.2e} of scale > {VERIFY_TOL:g}"
        )
