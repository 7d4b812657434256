"""The cell variants on the apps' command lines: --layer-norm, --peephole, --proj-size and --zoneout train,
are saved in the checkpoint's model config, and come back in sample / forecast / classify / export; bad
combinations are one line naming the flag."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled.apps import charlm
from unrolled.checkpoint import load_model
from unrolled.commands import main


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("unrolled: error:") and "\n" not in err
    return err


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    return str(path)


def test_charlm_trains_saves_and_samples_a_variant_lstm(tmp_path, text, capsys):
    out = str(tmp_path / "lm")
    argv = ["train", "charlm", "--text", text, "--out", out, "--steps", "2", "--hidden", "8", "--layers", "2"]
    argv += ["--embed", "4", "--batch", "2", "--seq-len", "5", "--val-chars", "200", "--quiet"]
    argv += ["--layer-norm", "--peephole", "--proj-size", "3", "--zoneout", "0.1"]
    assert main(argv) == 0
    model, _, _ = charlm.load(out)
    rnn = model.rnn
    assert (rnn.layer_norm, rnn.peephole, rnn.proj_size, rnn.zoneout) == (True, True, 3, 0.1)
    assert model.params["head.W"].shape[1] == 3 and "rnn.ln_c_g_l1" in model.params
    assert main(["sample", out, "--length", "10", "--seed", "1"]) == 0
    assert len(capsys.readouterr().out) >= 10
    assert main(["export", out, "--onnx", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the line naming the checkpoint it read
    assert err.startswith("unrolled: error: layer_norm: ONNX's recurrent operators cannot express")


def test_charlm_peephole_model_exports_to_onnx(tmp_path, text):
    pytest.importorskip("onnx", reason="onnx not installed: ONNX export not checked")
    out = str(tmp_path / "lm")
    argv = ["train", "charlm", "--text", text, "--out", out, "--steps", "1", "--hidden", "6", "--layers", "1"]
    argv += ["--embed", "4", "--batch", "2", "--seq-len", "5", "--val-chars", "200", "--quiet", "--peephole"]
    assert main(argv) == 0
    assert main(["export", out, "--onnx", str(tmp_path / "m.onnx")]) == 0
    import onnx

    node = next(n for n in onnx.load(str(tmp_path / "m.onnx")).graph.node if n.op_type == "LSTM")
    assert len(node.input) == 8 and node.input[7]


def test_forecast_with_a_layer_norm_gru_and_zoneout_end_to_end(tmp_path, capsys):
    rows = [f"{i},{np.sin(i / 4):.5f}" for i in range(120)]
    data = tmp_path / "s.csv"
    data.write_text("step,y\n" + "\n".join(rows) + "\n")
    out = str(tmp_path / "fc")
    argv = ["train", "forecast", "--csv", str(data), "--column", "y", "--lookback", "6", "--horizon", "2"]
    argv += ["--epochs", "2", "--hidden", "6", "--cell", "gru", "--layer-norm", "--zoneout", "0.2"]
    argv += ["--no-arima", "--out", out]
    assert main(argv) == 0
    model, _ = load_model(out)
    assert model.rnn.layer_norm and model.rnn.zoneout == 0.2 and "rnn.ln_h_g_l0" in model.params
    capsys.readouterr()
    assert main(["forecast", out, "--horizon", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_classify_with_a_projected_peephole_bidirectional_lstm_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(1)
    N, T = 40, 6
    y = rng.integers(0, 2, N)
    x = (rng.standard_normal((N, T, 2)) + np.where(y, 1.5, -1.5)[:, None, None]).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    out = str(tmp_path / "m")
    argv = ["train", "classify", "--npz", str(tmp_path / "d.npz"), "--bidirectional", "--hidden", "6"]
    argv += ["--peephole", "--proj-size", "4", "--epochs", "2", "--out", out]
    assert main(argv) == 0
    capsys.readouterr()
    model, _ = load_model(out)
    assert model.rnn.peephole and model.rnn.proj_size == 4 and model.params["head.W"].shape[1] == 8
    assert main(["classify", out, str(tmp_path / "d.npz")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == N + 1


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--cell", "gru", "--peephole"], "--peephole: an LSTM option"),
        (["--cell", "rnn", "--layer-norm"], "--layer-norm: an LSTM/GRU option"),
        (["--proj-size", "8", "--hidden", "8"], "--proj-size 8: expected fewer units than --hidden 8"),
        (["--zoneout", "1.5"], "--zoneout: expected a probability"),
    ],
)
def test_bad_variant_options_are_one_line(tmp_path, text, capsys, extra, match):
    assert match in _error(capsys, ["train", "charlm", "--text", text, "--out", str(tmp_path / "x"), *extra])
