"""``unrolled diagnose DIR_OR_CONFIG``: the gradient-flow report of a saved model (or a fresh one from a
config), in the terminal, and optionally the figure and the numbers as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from unrolled._checks import positive_int
from unrolled._files import open_regular_file, read_text_file
from unrolled._optional import require
from unrolled.commands._common import CLIError, add_checkpoint_option, model_choice, say_model
from unrolled.diagnostics.report import diagnose_model


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "diagnose",
        help="gradient-flow diagnostics: Jacobian products, γ, memory horizon, vanishing/exploding",
        description=(
            "Diagnose vanishing/exploding gradients of a model's recurrent stack on an input batch: "
            "exact Jacobian products ∂s_T/∂s_k, the fitted factor γ per step, the memory horizon, the "
            "verdict, the spectrum of W_hh and the gradient norms of a BPTT pass."
        ),
    )
    p.add_argument(
        "model", metavar="DIR_OR_CONFIG", help="a checkpoint directory, or a ModelConfig JSON file"
    )
    p.add_argument(
        "--input",
        metavar="FILE.npy",
        help="input batch, time-major: token ids (T, B) or features (T, B, I); default: random (see --steps)",
    )
    p.add_argument(
        "--target",
        metavar="FILE.npy",
        help="targets for --input (class ids: cross-entropy; floats: MSE): the BPTT norms are then those "
        "of this loss; default: a random probe of the output at the last step",
    )
    add_checkpoint_option(p)
    p.add_argument("--steps", type=int, default=100, help="T of the random input (default 100)")
    p.add_argument("--batch", type=int, default=8, help="B of the random input (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input and the probe loss")
    p.add_argument("--tol", type=float, default=0.01, help="γ within 1 ± tol is 'stable' (default 0.01)")
    p.add_argument("--plot", metavar="OUT.png", help="write the figure (needs matplotlib)")
    p.add_argument("--json", metavar="OUT.json", help="write the numbers as JSON")
    p.set_defaults(func=run)


def _load(path: Path, args: argparse.Namespace):
    """(model, where it came from, the ModelChoice or None) from a checkpoint directory or a config JSON."""
    from unrolled.models import ModelConfig, SequenceModel

    if path.is_dir():
        from unrolled.checkpoint import is_checkpoint, load_model

        choice = model_choice(args, path)  # a run directory: its best model, else its last
        if not is_checkpoint(choice.path):
            raise CLIError(f"{path}: not a checkpoint, nor a run directory with best/ or last/")
        model, _ = load_model(choice.path)
        return model, f"checkpoint {choice.path}", choice
    if not path.exists():
        raise CLIError(f"{path}: no such checkpoint directory or config file")
    text = read_text_file(path, "DIR_OR_CONFIG")  # a device or FIFO is refused, never read
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise CLIError(f"{path}: not a JSON config ({e})") from e
    if isinstance(d, dict) and isinstance(d.get("config"), dict):
        d = d["config"]
    fresh = f"config {path} (fresh weights, seed {d.get('seed')})"
    return SequenceModel(ModelConfig.from_dict(d)), fresh, None


def _load_npy(path: str, what: str) -> np.ndarray:
    """A plain .npy array (never unpickled) from a regular file: a device or FIFO is refused at once."""
    with open_regular_file(path, what) as f:
        try:
            return np.load(f, allow_pickle=False)
        except (ValueError, EOFError, OSError) as e:
            why = getattr(e, "strerror", None) or str(e).splitlines()[0]
            raise CLIError(f"{what} {path}: not a plain .npy array ({why})") from None


def _input(args, model) -> np.ndarray:
    c = model.config
    if args.input:
        x = _load_npy(args.input, "--input")
        if c.input == "tokens":
            if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
                raise CLIError(f"--input: expected integer token ids (T, B), got {x.dtype.name}{x.shape}")
            if x.size and (x.min() < 0 or x.max() >= c.vocab_size):
                raise CLIError(f"--input: token ids must be in 0..{c.vocab_size - 1}")
            return x
        if x.ndim != 3 or x.shape[2] != c.input_size:
            raise CLIError(f"--input: expected features (T, B, {c.input_size}), got shape {x.shape}")
        return x.astype(c.dtype)
    positive_int("--steps", args.steps)
    positive_int("--batch", args.batch)
    rng = np.random.default_rng(args.seed)
    if c.input == "tokens":
        return rng.integers(0, c.vocab_size, size=(args.steps, args.batch))
    return rng.standard_normal((args.steps, args.batch, c.input_size)).astype(c.dtype)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.tol < 1:
        raise CLIError(f"--tol: expected a number in (0, 1), got {args.tol}")
    if args.plot:  # before the work, not after a minute of it
        require("--plot", "matplotlib", "plot")
    model, origin, choice = _load(Path(args.model), args)
    x = _input(args, model)
    c = model.config
    target = None
    if args.target:
        if not args.input:
            raise CLIError("--target needs --input (the targets of that input)")
        target = _load_npy(args.target, "--target")
    if choice is not None:
        say_model(choice)
    diag = diagnose_model(model, x, seed=args.seed, tol=args.tol, target=target, progress=True)
    T, B = x.shape[:2]
    print(
        f"unrolled diagnose: {origin}\n  {c.cell} H={c.hidden_size} layers={c.num_layers}"
        f"{' bidirectional' if c.bidirectional else ''}, input T={T} B={B}; "
        + (
            "loss: the model's loss on --target\n"
            if target is not None
            else "loss probe: random unit direction of the output at the last step\n"
        )
    )
    print(diag.summary())
    if args.json:
        Path(args.json).write_text(json.dumps(diag.to_dict(), indent=1))
        print(f"\nnumbers: {args.json}")
    if args.plot:
        from unrolled.diagnostics.plot import plot_diagnosis

        plot_diagnosis(diag, args.plot, title=f"unrolled diagnose: {c.cell}, H={c.hidden_size}, T={T}")
        print(f"figure: {args.plot}")
    return 0
