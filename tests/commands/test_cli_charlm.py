"""The `unrolled` command line of the character-level model, run as a user runs it (real subprocesses)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from unrolled.apps.charlm.text import UNK

TEXT = (
    "the cat sat on the mat. the dog sat on the log. a cat and a dog sat on a mat and a log.\n"
    "to be or not to be, that is the question; the cat is not the dog and the mat is not the log.\n"
) * 12

TINY = [
    "--layers",
    "1",
    "--hidden",
    "24",
    "--embed",
    "8",
    "--seq-len",
    "16",
    "--batch",
    "4",
    "--lr",
    "0.02",
    "--quiet",
]


def unrolled(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the installed command line as a user would: `python -m unrolled.cli ARGS`."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    env.pop("UNROLLED_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "unrolled.cli", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env, encoding="utf-8",
    )  # fmt: skip


def assert_one_line_error(r: subprocess.CompletedProcess, *fragments: str) -> None:
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]


def meta(directory: Path) -> dict:
    """The meta of the run's last checkpoint."""
    return json.loads((directory / "last" / "meta.json").read_text(encoding="utf-8"))["meta"]


def summary(directory: Path) -> dict:
    return json.loads((directory / "summary.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny model trained for 30 steps through the real CLI: (its directory, its text)."""
    d = tmp_path_factory.mktemp("charlm")
    text = d / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    out = d / "model"
    r = unrolled("train", "charlm", "--text", text, "--out", out, "--steps", "30", "--val-every", "10", *TINY)
    assert r.returncode == 0, r.stderr
    return out, text


def test_train_saves_a_model_with_its_vocabulary_and_validation(trained):
    out, _ = trained
    m = meta(out)
    assert m["app"] == "charlm" and m["trainer"]["step"] == 30
    assert "".join(sorted(set(TEXT) | {UNK})) == m["vocab"]  # the text's characters and <unk>
    assert m["config"]["cell"] == "lstm" and m["config"]["hidden_size"] == 24
    s = summary(out)
    assert s["step"] == 30 and s["val_chars"] == round(0.1 * len(TEXT))
    # It learned something: uniform over the vocabulary would be log2(V) bits.
    assert s["val_bits"] < np.log2(len(set(TEXT))) - 0.5
    assert (out / "best" / "meta.json").exists()
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()][-1] == 30


def test_sample_streams_text_and_a_seed_reproduces_it(trained):
    out, _ = trained
    a = unrolled("sample", out, "--prime", "the ", "--length", "60", "--seed", "3")
    b = unrolled("sample", out, "--prime", "the ", "--length", "60", "--seed", "3")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout
    assert a.stdout.endswith("\n")
    text = a.stdout[:-1]  # the closing newline (a drawn character may be a newline too)
    assert text.startswith("the ") and len(text) == 4 + 60
    assert set(text) <= set(TEXT)


def test_sample_at_temperature_zero_is_greedy_and_deterministic(trained):
    out, _ = trained
    a = unrolled("sample", out, "--length", "40", "--temperature", "0", "--seed", "1")
    b = unrolled("sample", out, "--length", "40", "--temperature", "0", "--seed", "2")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout


def test_eval_reports_bits_per_character(trained):
    out, text = trained
    r = unrolled("eval", out, "--text", text)
    assert r.returncode == 0, r.stderr
    assert "bits per character" in r.stdout
    assert 0 < float(r.stdout.split()[0]) < 4.0


def test_resume_continues_the_step_count(trained, tmp_path):
    out, text = trained
    copy = tmp_path / "model"
    shutil.copytree(out, copy)
    r = unrolled("train", "charlm", "--out", copy, "--resume", "--steps", "40", "--quiet")
    assert r.returncode == 0, r.stderr
    assert meta(copy)["trainer"]["step"] == 40 and summary(copy)["step"] == 40
    assert meta(copy)["texts"] == [str(text.resolve())]  # the run's own text, remembered


def test_time_budget_stops_the_run_and_resume_continues_to_a_larger_total(trained, tmp_path):
    _, text = trained
    out = tmp_path / "timed"
    r = unrolled("train", "charlm", "--text", text, "--out", out, "--time", "0.02", *TINY)
    assert r.returncode == 0, r.stderr
    s = summary(out)
    assert s["reason"] == "max_time" and s["step"] >= 1 and s["train_seconds"] >= 1.2
    again = unrolled("train", "charlm", "--out", out, "--resume", "--quiet")
    assert_one_line_error(again, "give more --time")
    # the larger total is measured from where the first run really stopped: under load one step can take
    # longer than the first budget, and a fixed 2.4 s total could then already be spent
    total = s["train_seconds"] + 1.2
    r = unrolled("train", "charlm", "--out", out, "--resume", "--time", f"{total / 60:.6f}", "--quiet")
    assert r.returncode == 0, r.stderr
    assert summary(out)["step"] > s["step"] and summary(out)["train_seconds"] >= total - 1e-3


def test_a_run_stopped_and_resumed_ends_with_the_weights_of_the_run_never_stopped(trained, tmp_path):
    from unrolled.checkpoint import load_checkpoint

    _, text = trained
    opts = [*TINY, "--dropout", "0.2", "--val-every", "5"]  # dropout: the resumed RNG state matters too
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert unrolled("train", "charlm", "--text", text, "--out", whole, "--steps", "12", *opts).returncode == 0
    assert unrolled("train", "charlm", "--text", text, "--out", split, "--steps", "5", *opts).returncode == 0
    r = unrolled("train", "charlm", "--out", split, "--resume", "--steps", "12", "--quiet")
    assert r.returncode == 0, r.stderr
    a, _ = load_checkpoint(whole / "last")
    b, _ = load_checkpoint(split / "last")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_gru_and_vanilla_rnn_models_train_and_sample_too(trained, tmp_path, cell):
    _, text = trained
    out = tmp_path / cell
    r = unrolled("train", "charlm", "--text", text, "--out", out, "--steps", "5", "--cell", cell, *TINY)
    assert r.returncode == 0, r.stderr
    assert meta(out)["config"]["cell"] == cell
    r = unrolled("sample", out, "--prime", "the", "--length", "20", "--seed", "0")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) == 3 + 20 + 1  # prime, the characters drawn, the closing newline


def test_resume_refuses_a_different_architecture(trained, tmp_path):
    out, _ = trained
    r = unrolled("train", "charlm", "--out", out, "--resume", "--hidden", "32", "--steps", "50")
    assert_one_line_error(r, "--hidden")


def test_every_option_of_every_command_has_help():
    for cmd in (["train", "charlm"], ["sample"], ["eval"], ["demo"]):
        r = unrolled(*cmd, "--help")
        assert r.returncode == 0, r.stderr
        options = [w for w in r.stdout.split() if w.startswith("--")]
        assert options, r.stdout
    r = unrolled("train", "charlm", "--help")
    for opt in ("--text", "--cell", "--layers", "--hidden", "--seq-len", "--batch", "--steps", "--time",
                "--lr", "--clip", "--dropout", "--seed", "--out", "--resume"):  # fmt: skip
        assert opt in r.stdout


# --------------------------------------------------------------------------- bad input
def test_missing_text_file_is_one_line(tmp_path):
    r = unrolled("train", "charlm", "--text", tmp_path / "nope.txt", "--out", tmp_path / "m", *TINY)
    assert_one_line_error(r, "nope.txt", "no such file")


def test_empty_text_file_is_one_line(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    r = unrolled("train", "charlm", "--text", tmp_path / "empty.txt", "--out", tmp_path / "m", *TINY)
    assert_one_line_error(r, "empty")


def test_one_character_text_is_one_line(tmp_path):
    (tmp_path / "one.txt").write_text("x")
    r = unrolled("train", "charlm", "--text", tmp_path / "one.txt", "--out", tmp_path / "m", *TINY)
    assert_one_line_error(r, "one character")


def test_non_utf8_text_is_one_line(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("déjà vu".encode("latin-1"))
    r = unrolled("train", "charlm", "--text", tmp_path / "latin1.txt", "--out", tmp_path / "m", *TINY)
    assert_one_line_error(r, "not UTF-8", "byte offset 1")


def test_unknown_priming_character_is_one_line(trained):
    out, _ = trained
    r = unrolled("sample", out, "--prime", "the Z")
    assert_one_line_error(r, "--prime", "'Z'", "not in the model's vocabulary")


def test_eval_text_with_an_unknown_character_is_one_line(trained, tmp_path):
    out, _ = trained
    (tmp_path / "other.txt").write_text("the cat sat on the QUEEN", encoding="utf-8")
    r = unrolled("eval", out, "--text", tmp_path / "other.txt")
    assert_one_line_error(r, "other.txt", "'Q'")


@pytest.mark.parametrize("kind", ["missing", "empty dir", "file", "garbage meta"])
def test_dir_that_is_not_a_model_is_one_line(tmp_path, kind):
    d = tmp_path / "notamodel"
    if kind == "empty dir":
        d.mkdir()
    elif kind == "file":
        d.write_text("hello")
    elif kind == "garbage meta":
        d.mkdir()
        (d / "meta.json").write_text("{not json")
    for cmd in (["sample", d], ["eval", d, "--text", __file__]):
        r = unrolled(*cmd)
        assert_one_line_error(r, "notamodel")


def test_bad_option_values_are_one_line(trained, tmp_path):
    out, text = trained
    assert_one_line_error(unrolled("sample", out, "--temperature", "-1"), "temperature")
    assert_one_line_error(unrolled("sample", out, "--top-k", "0"), "top-k")
    r = unrolled("train", "charlm", "--text", text, "--out", tmp_path / "m", "--hidden", "0", "--quiet")
    assert_one_line_error(r, "--hidden")
