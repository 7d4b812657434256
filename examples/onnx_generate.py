"""Generate text from a character model exported by ``unrolled export``, with onnxruntime alone.

    unrolled train charlm --text input.txt --out runs/mine
    unrolled export runs/mine --onnx mine.onnx
    python examples/onnx_generate.py mine.onnx --prime "ROMEO:" --length 200 --temperature 0.8 --seed 1
    python examples/onnx_generate.py mine.onnx --prime "ROMEO:" --length 200 --temperature 0   # greedy

Needs only numpy and onnxruntime: everything else (the vocabulary, the state's names and shapes, the
default prime) is in the file's metadata. The graph takes ids x (T, B) and the state, and returns logits
y (T, B, V) and the next state; the prime is read in one call (T = P), then each drawn character is fed
back alone (T = 1) with the carried state, so a character costs one step, as in ``unrolled sample``.

Drawing is that of ``unrolled sample``: softmax(logits / T) over the top k, one uniform draw per character
from ``numpy.random.default_rng(seed)`` by inverse CDF; greedy (T = 0) is the arg max. So the greedy text
equals ``unrolled sample --temperature 0``; a sampled one too, unless float32 differences between the two
runtimes move a draw across a boundary of the cumulative distribution.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import onnxruntime as ort


def load(path: str):
    """(session, metadata dict) of an exported character model."""
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    if meta.get("unrolled.app") != "charlm":
        sys.exit(f"{path}: not a character model exported by unrolled (app {meta.get('unrolled.app')!r})")
    return sess, meta


def next_id(logits: np.ndarray, temperature: float, top_k: int | None, rng: np.random.Generator) -> int:
    """One id from the logits (V,): greedy for temperature 0, else a draw from softmax(logits / T)."""
    z = logits.astype(np.float64)
    if top_k is not None and top_k < z.size:
        keep = np.argpartition(z, z.size - top_k)[z.size - top_k :]
        cut = np.full(z.size, -np.inf)
        cut[keep] = z[keep]
        z = cut
    if temperature == 0:
        return int(np.argmax(z))
    z = z / temperature
    p = np.exp(z - z.max())  # the same operations as unrolled's, so the same draws
    cdf = np.cumsum(p / p.sum())
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), z.size - 1))


def generate(
    sess, meta: dict, prime: str, length: int, temperature: float, top_k: int | None, seed: int | None
):
    """Yield ``length`` characters continuing ``prime``."""
    chars = json.loads(meta["unrolled.vocab"])
    index = {c: i for i, c in enumerate(chars)}
    unknown = [c for c in prime if c not in index]
    if unknown:
        sys.exit(f"--prime: character {unknown[0]!r} is not in the model's vocabulary of {len(chars)}")
    # The state: zeros of each input's shape, the batch axis "B" = 1.
    layout = json.loads(meta["unrolled.state"])
    state = {s["input"]: np.zeros([1 if d == "B" else d for d in s["shape"]], np.float32) for s in layout}
    rng = np.random.default_rng(seed)
    x = np.array([index[c] for c in prime], dtype=np.int64)[:, None]  # (P, 1): the prime, read at once
    outputs = ["y"] + [s["output"] for s in layout]
    for _ in range(length):
        y, *new = sess.run(outputs, {"x": x, **state})
        state = {s["input"]: v for s, v in zip(layout, new, strict=True)}
        token = next_id(y[-1, 0], temperature, top_k, rng)
        yield chars[token]
        x = np.array([[token]], dtype=np.int64)  # (1, 1): one step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="the .onnx file of `unrolled export` on a character model")
    p.add_argument("--prime", default=None, help="text to start from (default: the model's default prime)")
    p.add_argument("--length", type=int, default=500, help="characters to generate (default 500)")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy (default: the model's)")
    p.add_argument("--top-k", type=int, default=None, help="draw only among the K most likely characters")
    p.add_argument("--seed", type=int, default=None, help="seed of the draws")
    args = p.parse_args(argv)
    sess, meta = load(args.model)
    defaults = json.loads(meta["unrolled.sampling"])
    temperature = defaults["temperature"] if args.temperature is None else args.temperature
    if not np.isfinite(temperature) or temperature < 0 or args.length < 0:
        sys.exit("--temperature and --length: expected numbers >= 0")
    if args.top_k is not None and args.top_k < 1:
        sys.exit(f"--top-k: expected a positive integer, got {args.top_k}")
    prime = args.prime or meta["unrolled.default_prime"]
    sys.stdout.write(prime)
    for c in generate(sess, meta, prime, args.length, temperature, args.top_k, args.seed):
        sys.stdout.write(c)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
