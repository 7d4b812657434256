"""``unrolled quantize`` and ``--quantized``: quantised models through the commands that load models."""

from __future__ import annotations

import json

import pytest

from unrolled.checkpoint import load_checkpoint
from unrolled.commands import main
from unrolled.commands._common import QUANTIZED_KINDS
from unrolled.kernels.quantized import KINDS

TEXT = "the cat sat on the mat. the dog sat on the log.\n" * 20
TINY = ["--layers", "2", "--hidden", "16", "--embed", "8", "--seq-len", "12", "--batch", "4", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("q")
    (d / "t.txt").write_text(TEXT)
    assert (
        main(["train", "charlm", "--text", str(d / "t.txt"), "--out", str(d / "run"), *TINY, "--steps", "3"])
        == 0
    )
    return d


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("unrolled: error:") and "\n" not in err
    return err


def test_the_parser_offers_the_library_kinds():
    assert QUANTIZED_KINDS == KINDS


def test_quantize_writes_a_checkpoint_every_command_reads(run, capsys):
    out = run / "q8"
    assert main(["quantize", str(run / "run"), "--to", "int8", "--out", str(out)]) == 0
    said = capsys.readouterr()
    assert said.out.startswith(f"wrote {out}: int8 recurrent weights") and "using" in said.err
    arrays, meta = load_checkpoint(out)
    assert meta["quantized"] == "int8" and meta["vocab"] and arrays["model/rnn.W_hh_l1"].dtype.name == "int8"
    assert main(["sample", str(out), "--length", "20", "--seed", "1"]) == 0
    from_file = capsys.readouterr().out
    assert main(["sample", str(run / "run"), "--quantized", "int8", "--length", "20", "--seed", "1"]) == 0
    assert capsys.readouterr().out == from_file  # quantised on load: the same model, the same text
    assert main(["eval", str(out), "--text", str(run / "t.txt")]) == 0
    assert "bits per character" in capsys.readouterr().out


def test_refusals_are_one_line(run, capsys):
    out = run / "qb"
    assert main(["quantize", str(run / "run"), "--to", "bf16", "--out", str(out)]) == 0
    capsys.readouterr()
    assert "quantised already (bf16)" in _error(
        capsys, ["quantize", str(out), "--to", "int8", "--out", str(run / "x")]
    )
    assert "not an empty directory" in _error(
        capsys, ["quantize", str(run / "run"), "--to", "int8", "--out", str(out)]
    )
    err = _error(capsys, ["sample", str(out), "--quantized", "int8", "--length", "5"])
    assert "stored quantised as bf16" in err
    assert json.loads((out / "meta.json").read_text())["meta"]["quantized"] == "bf16"  # untouched


def test_forecast_reads_a_quantised_model(tmp_path, capsys):
    import numpy as np

    data = tmp_path / "s.csv"
    data.write_text("y\n" + "\n".join(f"{np.sin(i / 3):.4f}" for i in range(80)) + "\n")
    argv = ["train", "forecast", "--csv", str(data), "--column", "y", "--lookback", "6", "--horizon", "2"]
    assert main([*argv, "--hidden", "8", "--epochs", "2", "--no-arima", "--out", str(tmp_path / "m")]) == 0
    assert main(["quantize", str(tmp_path / "m"), "--to", "int8", "--out", str(tmp_path / "q")]) == 0
    capsys.readouterr()
    assert main(["forecast", str(tmp_path / "q"), "--holdout"]) == 0
    stored = capsys.readouterr().out
    assert main(["forecast", str(tmp_path / "m"), "--holdout", "--quantized", "int8"]) == 0
    assert capsys.readouterr().out == stored
    assert stored.splitlines()[0] == "step,time,forecast,actual"


def test_out_that_is_a_link_file_fifo_or_full_directory_is_refused(run, capsys, tmp_path):
    import os

    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "file").write_text("keep")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    for name, says in [
        ("link", "symbolic link"),
        ("dangling", "symbolic link"),
        ("file", "not an empty directory"),
        ("fifo", "not an empty directory"),
        ("full", "not an empty directory"),
    ]:
        err = _error(capsys, ["quantize", str(run / "run"), "--to", "int8", "--out", str(tmp_path / name)])
        assert says in err, name
    assert not (tmp_path / "nowhere").exists() and not any((tmp_path / "empty").iterdir())
    assert (tmp_path / "file").read_text() == "keep" and (tmp_path / "full" / "x").read_text() == "keep"


def test_a_failed_save_leaves_nothing_behind(run, capsys, tmp_path, monkeypatch):
    import unrolled.checkpoint

    def broken(path, *a, **k):
        (path / "partial").parent.mkdir(parents=True, exist_ok=True)
        (path / "partial").write_text("half")
        raise OSError("No space left on device")

    monkeypatch.setattr(unrolled.checkpoint, "save_model", broken)
    for out in ("new", "empty"):  # made by the command: removed; an empty one given: emptied again
        if out == "empty":
            (tmp_path / out).mkdir()
        assert main(["quantize", str(run / "run"), "--to", "int8", "--out", str(tmp_path / out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after the "using …" line
        assert err.startswith("unrolled: error: --out") and "could not write the model" in err
    assert not (tmp_path / "new").exists()
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())
