"""``unrolled demo``: train a small character-level LSTM on Python's own source for a few minutes, then let
it write Python. The corpus and the model are :mod:`unrolled.apps.charlm.demo`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from unrolled._checks import non_negative_int, positive_float
from unrolled.apps.charlm import APP, SampleConfig, fit, load, report, sample_text
from unrolled.apps.charlm.demo import DEFAULT_OUT, DEMO_MODEL, DEMO_MODULES, PRIME, demo_corpus
from unrolled.apps.charlm.sampling import check_sampling
from unrolled.apps.fields import option
from unrolled.commands._common import open_out
from unrolled.commands._options import add_config_options, given_options


@dataclass
class DemoOptions:
    """The options of ``unrolled demo`` (its command line is built from these fields)."""

    out: str = option(
        str(DEFAULT_OUT),
        "directory for the model (a previous demo there is replaced; anything else is refused)",
        metavar="DIR",
    )
    time: float = option(2.0, "minutes of training", metavar="MINUTES")
    seed: int = option(0, "seed of the initial weights and of the sample", metavar="N")
    length: int = option(600, "characters of Python to generate at the end", metavar="N")
    temperature: float = option(0.6, "sampling temperature of the generated code (0 = greedy)", metavar="T")


def register(subparsers) -> None:
    p = subparsers.add_parser(
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    opts = DemoOptions(**given_options(args, DemoOptions))
    check_sampling(opts.temperature, None)  # bad options fail now, not after two minutes of training
    non_negative_int("--length", opts.length)
    positive_float("--time", opts.time)
    out = Path(opts.out)
    _refuse_a_run_that_is_not_a_demo(out)
    paths = demo_corpus()
    cfg = dataclasses.replace(DEMO_MODEL, seed=opts.seed, time=opts.time, steps=None)
    print(f"corpus: the source of {len(paths)} standard-library modules of Python {sys.version.split()[0]}")
    t0 = time.perf_counter()
    # A previous demo is replaced (only the files unrolled wrote are removed; a folder holding anything
    # else is refused). Kind "charlm": `unrolled train charlm --out DIR --resume` continues a demo.
    run_args = argparse.Namespace(out=out, resume=False, overwrite=True)
    with open_out(run_args, APP) as run_dir:
        summary = fit(cfg, paths, run_dir, progress=not args.quiet, extra_meta={"demo": True})
    report(summary)
    if summary.reason == "interrupted":
        return 130
    model, vocab, _ = load(out)
    print(f"\n--- a sample (unrolled sample {out} --prime '{PRIME}' --temperature {opts.temperature}) ---")
    sample = SampleConfig(prime=PRIME, length=opts.length, temperature=opts.temperature, seed=opts.seed)
    sys.stdout.write(PRIME)
    for c in sample_text(model, vocab, sample):
        sys.stdout.write(c)
        sys.stdout.flush()
    print(f"\n---\ndemo done in {(time.perf_counter() - t0) / 60:.1f} min")
    return 0


def _refuse_a_run_that_is_not_a_demo(out: Path) -> None:
    """The demo replaces only a demo: a `train charlm` model (or a run of another kind) is kept."""
    from unrolled.checkpoint import load_checkpoint
    from unrolled.rundir import RunDirError, run_kind

    kind = run_kind(out)
    if kind is not None and kind not in (APP, "demo"):
        raise RunDirError(f"--out {out}: holds a {kind} run, not a demo; choose another --out")
    last = out / "last"
    if (last / "meta.json").exists() and not last.is_symlink() and not load_checkpoint(last)[1].get("demo"):
        raise RunDirError(f"--out {out}: holds a model that is not a demo; choose another --out")
