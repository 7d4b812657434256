"""The translation commands end to end: train (dates, a pairs file), translate, eval, bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from unrolled.commands import main

TINY = [
    "--steps",
    "20",
    "--eval-every",
    "10",
    "--hidden",
    "8",
    "--embed-dim",
    "8",
    "--batch",
    "16",
    "--quiet",
]


@pytest.fixture(scope="module")
def dates_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("dates") / "model"
    assert main(["train", "translate", "--dates", "300", "--select", "exact", *TINY, "--out", str(out)]) == 0
    return out


def test_train_translate_and_eval_a_dates_model(dates_model, capsys, tmp_path):
    capsys.readouterr()
    assert main(["translate", str(dates_model), "3rd of March 1998"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    png = tmp_path / "att.png"
    held = dates_model / "heldout.tsv"
    assert (
        main(["eval", str(dates_model), "--pairs", str(held), "--beam", "3", "--plot-attention", str(png)])
        == 0
    )
    out = capsys.readouterr().out
    assert "BLEU" in out and "copying the source" in out and "token accuracy" in out
    assert png.stat().st_size > 1000


def test_translate_reads_lines_from_standard_input(dates_model):
    r = subprocess.run(
        [sys.executable, "-m", "unrolled.cli", "translate", str(dates_model), "--beam", "2"],
        input="1998/03/03\nMarch 3, 1998\n",
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2


def test_train_on_a_pairs_file_with_chosen_columns(tmp_path, capsys):
    f = tmp_path / "pairs.tsv"
    rows = [("cc", f"a{i}", f"b{i} c") for i in range(30)]
    f.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "m"
    args = ["train", "translate", "--pairs", str(f), "--source-col", "2", "--target-col", "3", *TINY]
    assert main([*args, "--out", str(out)]) == 0
    assert "held out: BLEU" in capsys.readouterr().out
    assert main(["translate", str(out), "a3"]) == 0


def _error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("unrolled: error:"), err
    return err


@pytest.mark.parametrize(
    "content, extra, message",
    [
        ("", [], "empty"),
        ("Go.\tVa !\nHi. Salut !\n", [], "no tab"),
        ("Go.\tVa !\n", ["--target-col", "4"], "column 4 requested"),
    ],
)
def test_bad_pairs_files_are_one_line_errors(tmp_path, capsys, content, extra, message):
    f = tmp_path / "p.tsv"
    f.write_text(content, encoding="utf-8")
    err = _error(
        capsys, ["train", "translate", "--pairs", str(f), *extra, *TINY, "--out", str(tmp_path / "m")]
    )
    assert message in err


def test_eval_with_bad_pairs_and_on_a_directory_that_is_not_a_model(dates_model, tmp_path, capsys):
    f = tmp_path / "p.tsv"
    f.write_text("only one column\n", encoding="utf-8")
    assert "no tab" in _error(capsys, ["eval", str(dates_model), "--pairs", str(f)])
    assert "not a checkpoint" in _error(capsys, ["translate", str(tmp_path), "hello"])
    assert "not a translation model" in _error(capsys, ["eval", str(tmp_path), "--pairs", str(f)])
    assert "--beam" in _error(capsys, ["translate", str(dates_model), "--beam", "0", "x"])


def test_an_interrupted_run_resumed_ends_with_the_weights_of_the_uninterrupted_one(tmp_path):
    from unrolled.checkpoint import load_checkpoint

    common = [
        "train",
        "translate",
        "--dates",
        "200",
        "--tokenizer",
        "char",
        "--hidden",
        "6",
        "--embed-dim",
        "4",
    ]
    common += ["--batch", "16", "--eval-every", "5", "--dropout", "0.3", "--sample-prob", "0.2", "--quiet"]
    assert main([*common, "--steps", "16", "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--steps", "7", "--out", str(tmp_path / "b")]) == 0
    assert main([*common, "--steps", "16", "--resume", "--out", str(tmp_path / "b")]) == 0
    a, meta_a = load_checkpoint(tmp_path / "a" / "train" / "last")
    b, meta_b = load_checkpoint(tmp_path / "b" / "train" / "last")
    assert meta_a["trainer"]["step"] == meta_b["trainer"]["step"] == 16
    assert set(a) == set(b)
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_resume_without_a_run_is_a_clear_error(tmp_path, capsys):
    err = _error(
        capsys, ["train", "translate", "--dates", "50", *TINY, "--resume", "--out", str(tmp_path / "x")]
    )
    assert "no run to continue" in err
