"""`unrolled demo`: its corpus is on every Python, and the command runs end to end without any file."""

from __future__ import annotations

import json
import subprocess
import sys

from unrolled.apps.charlm.demo import DEMO_MODULES, demo_corpus
from unrolled.apps.charlm.text import scan_texts


def test_the_demo_corpus_is_the_documented_modules_of_this_python():
    paths = demo_corpus()
    # Every one found, in the documented order (a module may be a package: its __init__.py).
    assert [p.parent.name if p.stem == "__init__" else p.stem for p in paths] == list(DEMO_MODULES)
    stats = scan_texts(paths)  # all of it UTF-8
    # Enough text that two minutes (~4 M characters) see it only about twice: on 0.79 MB the validation
    # rose for the last 40 % of the run
    assert stats.total > 1_800_000 and len(stats.chars) > 90


def test_demo_trains_saves_and_prints_python(tmp_path):
    out = tmp_path / "demo"
    cmd = [
        sys.executable,
        "-m",
        "unrolled.commands",
        "demo",
        "--out",
        str(out),
        "--time",
        "0.01",
        "--length",
        "40",
        "--quiet",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, encoding="utf-8")
    assert r.returncode == 0, r.stderr
    assert "validation" in r.stdout and "bits/char" in r.stdout
    start = r.stdout.index(" ---\n", r.stdout.index("--- a sample")) + len(" ---\n")
    sample = r.stdout[start : r.stdout.rindex("\n---\ndemo done")]
    assert sample.startswith("def ") and len(sample) == 4 + 40
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reason"] == "max_time" and summary["val_bits"] > 0
    # Running it again replaces the previous demo.
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, encoding="utf-8")
    assert r.returncode == 0, r.stderr
