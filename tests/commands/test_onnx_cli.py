"""``unrolled export DIR --onnx OUT.onnx``: a checkpoint becomes an ONNX file that onnxruntime runs to
unrolled's outputs; user errors are one line and exit status 2."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("unrolled.models")
pytest.importorskip("unrolled.checkpoint")
onnx = pytest.importorskip("onnx", reason="onnx not installed (pip install 'unrolled[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'unrolled[onnx]')")

from unrolled.checkpoint import save_model  # noqa: E402
from unrolled.commands import main  # noqa: E402
from unrolled.models import ModelConfig, SequenceModel  # noqa: E402


@pytest.fixture()
def checkpoint(tmp_path):
    cfg = ModelConfig(
        vocab_size=17, embed_dim=5, cell="lstm", hidden_size=6, num_layers=2, bidirectional=True,
        output="mean", output_size=4, seed=0,
    )  # fmt: skip
    model = SequenceModel(cfg)
    rng = np.random.default_rng(0)
    for v in model.params.values():
        v[...] = 0.5 * rng.standard_normal(v.shape)
    save_model(tmp_path / "ckpt", model)
    return tmp_path / "ckpt", model.eval()


def test_export_writes_an_onnx_file_equal_to_the_model(checkpoint, tmp_path, capsys):
    ckpt, model = checkpoint
    out = tmp_path / "model.onnx"
    assert main(["export", str(ckpt), "--onnx", str(out), "--verify"]) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "max |Δy|" in printed
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    x = np.random.default_rng(1).integers(0, 17, (8, 3))
    lengths = np.array([8, 3, 5])
    y, _ = model(x, lengths=lengths)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (y_ort,) = sess.run(["y"], {"x": x, "lengths": lengths.astype(np.int32)})
    np.testing.assert_allclose(y_ort, y, rtol=0, atol=1e-5)


def test_export_options_change_the_graph_inputs(checkpoint, tmp_path):
    ckpt, _ = checkpoint
    out = tmp_path / "m.onnx"
    assert main(["export", str(ckpt), "--onnx", str(out), "--no-lengths", "--initial-state", "--verify"]) == 0
    names = [i.name for i in onnx.load(str(out)).graph.input]
    assert names == ["x", "h0", "c0"]


def test_export_user_errors_are_one_line(checkpoint, tmp_path, capsys):
    ckpt, _ = checkpoint
    assert main(["export", str(tmp_path / "absent"), "--onnx", str(tmp_path / "a.onnx")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--onnx", str(tmp_path / "a.onnx")]) == 2  # not a checkpoint
    err = capsys.readouterr().err
    assert err.startswith("unrolled: error:") and err.count("\n") == 1
    assert main(["export", str(ckpt), "--onnx", str(tmp_path / "no" / "dir" / "a.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
