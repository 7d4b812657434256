"""``UNROLLED_QUICK=1``: every command's length capped, for tests only.

The test that runs the README's commands as written (tests/docs/test_readme_runs.py) cannot wait two minutes
for the demo and fifteen for ``train charlm --time 15``; rather than editing the commands it runs, it sets
this variable and the caps below apply to whatever the command line gave. This is the only place that
reads it. A user never needs it: the results are those of a model trained for seconds.
"""

from __future__ import annotations

import argparse
import os
import sys

# option dest -> its cap, in the option's own unit
CAPS = {
    "steps": 20,  # training steps (train charlm/translate, experiment); T of diagnose's random input
    "epochs": 2,  # train forecast, train classify
    "time": 0.05,  # minutes (demo, train charlm, train translate): 3 seconds
    "time_limit": 0.05,  # minutes (train forecast, train classify)
    "time_budget": 3.0,  # seconds per run (experiment)
}
# Commands whose length is a --time that argparse leaves unset when not given (the default is resolved
# later, e.g. by --resume), so the cap has to set it.
_TIMED = ("demo", "train charlm")


def enabled() -> bool:
    return os.environ.get("UNROLLED_QUICK", "") not in ("", "0")


def apply_quick(args: argparse.Namespace) -> argparse.Namespace:
    """Cap the lengths in ``args`` (in place) when ``UNROLLED_QUICK`` is set, saying so on stderr."""
    if not enabled():
        return args
    capped = []
    for dest, cap in CAPS.items():
        v = getattr(args, dest, None)
        if isinstance(v, int | float) and not isinstance(v, bool) and v > cap:
            setattr(args, dest, type(v)(cap))
            capped.append(dest)
    command = " ".join(filter(None, (getattr(args, "command", None), getattr(args, "train_kind", None))))
    if command in _TIMED and not hasattr(args, "time") and not hasattr(args, "steps"):
        args.time = CAPS["time"]
        capped.append("time")
    if capped:
        print(f"unrolled: UNROLLED_QUICK is set (tests only): capped {', '.join(capped)}", file=sys.stderr)
    return args
