"""``unrolled export DIR --onnx OUT.onnx``: a saved model as an ONNX graph with native RNN/LSTM/GRU ops."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unrolled.commands._common import CLIError, add_checkpoint_option, model_choice, say_model


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a saved model to ONNX (native RNN/LSTM/GRU operators)",
        description=(
            "Export the model of a checkpoint directory (embedding or dense input -> recurrent stack -> "
            "linear head) as an ONNX graph: inputs x (T, B) int64 token ids or (T, B, I) float32 features "
            "and lengths (B,) int32; outputs y and the final states h_n (and c_n)."
        ),
    )
    p.add_argument("model", metavar="DIR", help="a checkpoint directory (unrolled train ... / save_model)")
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
        help="run the file with onnxruntime on a random batch of varied lengths and compare with unrolled",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from unrolled.checkpoint import load_model
    from unrolled.interop.onnx import export

    src = Path(args.model)
    if not src.is_dir():
        raise CLIError(f"{src}: not a directory (expected a checkpoint directory)")
    out = Path(args.onnx)
    if not out.parent.is_dir():
        raise CLIError(f"cannot write {out}: directory {out.parent} does not exist")
    choice = model_choice(args, src)  # a run directory: its best/ (else last/) checkpoint
    model, _ = load_model(choice.path)
    lengths = not args.no_lengths
    export(model, out, lengths=lengths, initial_state=args.initial_state)
    say_model(choice)
    c = model.config
    kind = f"{c.cell.upper()} x{c.num_layers}" + (" bidirectional" if c.bidirectional else "")
    print(f"wrote {out} ({out.stat().st_size / 1024:.1f} KiB): {kind}, output={c.output}, opset 17, float32")
    if args.verify:
        err = verify(model, out, lengths=lengths, initial_state=args.initial_state)
        print(f"onnxruntime vs unrolled: max |Δy| = {err:.2e} (random batch T=9, B=4, lengths 9..1)")
        if not err <= 1e-5:
            raise CLIError(f"verification failed: max |Δy| = {err:.2e} > 1e-5")
    return 0


def verify(model, path: Path, *, lengths: bool = True, initial_state: bool = False, seed: int = 0) -> float:
    """Max |y_onnxruntime − y_unrolled| on a random batch (float32 inputs; varied lengths when enabled)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError("--verify needs onnxruntime: pip install 'unrolled[onnx]'") from e
    rng = np.random.default_rng(seed)
    T, B = 9, 4
    c = model.config
    if model.embed is not None:
        x = rng.integers(0, c.vocab_size, (T, B))
    else:
        x = rng.standard_normal((T, B, c.input_size)).astype(model.dtype)
    lens = np.array([T, 5, 2, 1]) if lengths else None
    LD = c.num_layers * (2 if c.bidirectional else 1)
    states = [rng.standard_normal((LD, B, c.hidden_size)) for _ in range(2 if c.cell == "lstm" else 1)]
    feeds = {"x": x if model.embed is not None else x.astype(np.float32)}
    if lens is not None:
        feeds["lengths"] = lens.astype(np.int32)
    state0 = None
    if initial_state:
        feeds.update({n: s.astype(np.float32) for n, s in zip(("h0", "c0"), states, strict=False)})
        state0 = tuple(s.astype(model.dtype) for s in states)
        state0 = state0 if c.cell == "lstm" else state0[0]
    model.eval()
    y, _ = model(x, state0, lengths=lens)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y_ort,) = sess.run(["y"], feeds)
    return float(np.abs(y_ort.astype(np.float64) - y).max())
