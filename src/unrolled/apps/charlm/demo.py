"""``unrolled demo``: train a small character-level LSTM on Python's own source, then let it write Python.

Nothing is downloaded and no file is needed: the corpus is the source of :data:`DEMO_MODULES`, a fixed
list of pure-Python modules of the standard library, found with ``importlib.util.find_spec(name).origin``
on the interpreter that runs the demo (about 0.8 MB of text). Their exact text — and so the
numbers — varies a little between Python versions.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from unrolled.apps._options import given_options, option
from unrolled.apps.charlm import (
    CharLMConfig,
    SampleConfig,
    add_config_options,
    load_charlm,
    report,
    sample_text,
    train,
)

# Pure-Python standard-library modules present on every CPython install (none is frozen, none is split
# off into a separate distribution package), in the order their texts are concatenated. The last ones
# (about 10% of the text) are the validation part.
DEMO_MODULES: tuple[str, ...] = (
    "argparse", "textwrap", "string", "shlex", "fnmatch", "glob", "bisect", "heapq", "colorsys",
    "calendar", "difflib", "functools", "fractions", "statistics", "queue", "random", "dataclasses",
    "csv", "pprint", "contextlib", "copy", "enum", "base64", "numbers", "operator", "ipaddress",
)  # fmt: skip

DEFAULT_OUT = Path("runs") / "demo"


def demo_corpus(modules: tuple[str, ...] = DEMO_MODULES) -> list[Path]:
    """The source files of `modules` on this interpreter; modules without a .py source are left out."""
    paths = []
    for name in modules:
        spec = importlib.util.find_spec(name)
        origin = getattr(spec, "origin", None)
        if origin and origin.endswith(".py") and Path(origin).is_file():
            paths.append(Path(origin))
    if len(paths) < len(modules) // 2:
        raise RuntimeError(
            f"demo: only {len(paths)} of the {len(modules)} standard-library sources were found on this "
            f"Python ({sys.executable}); train on your own text with `unrolled train charlm --text FILE`"
        )
    return paths


@dataclass
class DemoOptions:
    """The options of ``unrolled demo`` (its command line is built from these fields)."""

    out: str = option(
        str(DEFAULT_OUT), "directory for the model (a previous demo there is replaced)", metavar="DIR"
    )
    time: float = option(2.0, "minutes of training", metavar="MINUTES")
    seed: int = option(0, "seed of the initial weights and of the sample", metavar="N")
    length: int = option(600, "characters of Python to generate at the end", metavar="N")
    temperature: float = option(0.6, "sampling temperature of the generated code (0 = greedy)", metavar="T")


# The model the demo trains: small enough to learn something visible in two minutes on 2 CPU cores.
DEMO_MODEL = CharLMConfig(
    cell="lstm", layers=2, hidden=192, embed=48, seq_len=64, batch=32, lr=3e-3, clip=5.0,
    val_every=150, val_chars=200_000,
)  # fmt: skip

PRIME = "def "


def register(sub) -> None:
    """``unrolled demo``."""
    p = sub.add_parser(
        "demo",
        help="train a small LSTM on Python's own source for ~2 minutes, then let it write Python",
        description="The main job, with nothing to download: trains a character-level LSTM on the source "
        f"of {len(DEMO_MODULES)} standard-library modules of this Python ({', '.join(DEMO_MODULES[:4])}, "
        "…) with a progress bar and validation bits per character, saves the model, and prints a "
        "sample of generated code. Continue with `unrolled sample DIR`, `unrolled eval DIR --text FILE` "
        "or `unrolled train charlm --out DIR --resume --time MINUTES`.",
    )
    add_config_options(p, DemoOptions)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from unrolled.apps.sampling import check_sampling

    opts = DemoOptions(**given_options(args, DemoOptions))
    check_sampling(opts.temperature, None)  # bad options fail now, not after two minutes of training
    if opts.length < 0 or not opts.time > 0:
        raise ValueError(
            f"--length {opts.length} / --time {opts.time}: expected a length >= 0 and a time > 0"
        )
    out = Path(opts.out)
    if (out / "last" / "meta.json").exists():
        from unrolled.checkpoint import load_checkpoint

        if not load_checkpoint(out / "last")[1].get("demo"):
            raise ValueError(f"--out {out}: holds a model that is not a demo; choose another --out")
        shutil.rmtree(out)
    paths = demo_corpus()
    cfg = dataclasses.replace(DEMO_MODEL, seed=opts.seed, time=opts.time, steps=None)
    print(f"corpus: the source of {len(paths)} standard-library modules of Python {sys.version.split()[0]}")
    t0 = time.perf_counter()
    summary = train(cfg, paths, out, progress=not args.quiet, extra_meta={"demo": True})
    report(summary)
    model, vocab, _ = load_charlm(out)
    print(f"\n--- a sample (unrolled sample {out} --prime '{PRIME}' --temperature {opts.temperature}) ---")
    sample = SampleConfig(prime=PRIME, length=opts.length, temperature=opts.temperature, seed=opts.seed)
    sys.stdout.write(PRIME)
    for c in sample_text(model, vocab, sample):
        sys.stdout.write(c)
        sys.stdout.flush()
    print(f"\n---\ndemo done in {(time.perf_counter() - t0) / 60:.1f} min")
    return 0
