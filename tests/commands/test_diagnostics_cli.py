"""`unrolled diagnose` on a saved checkpoint and on a config, the figure, and its one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unrolled.checkpoint import save_model
from unrolled.commands import main
from unrolled.diagnostics import diagnose_model, linear_rnn
from unrolled.models import ModelConfig, SequenceModel


def _config(**kw) -> dict:
    base = dict(input="dense", input_size=3, cell="gru", hidden_size=6, output_size=2, seed=4)
    return {**base, **kw}


def test_diagnose_a_checkpoint_prints_the_verdict_and_writes_figure_and_json(tmp_path, capsys):
    model = SequenceModel(ModelConfig(**_config(cell="lstm", num_layers=2)))
    save_model(tmp_path / "ckpt" / "best", model)  # a run directory: diagnose finds best/
    out_png, out_json = tmp_path / "d.png", tmp_path / "d.json"
    pytest.importorskip("matplotlib")
    rc = main(["diagnose", str(tmp_path / "ckpt"), "--steps", "20", "--batch", "3", "--plot", str(out_png),
               "--json", str(out_json)])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "layer 1 [lstm, state joint (h, c), T = 20]" in text and "γ =" in text and "c-path" in text
    assert out_png.stat().st_size > 10_000 and out_png.read_bytes()[:4] == b"\x89PNG"
    numbers = json.loads(out_json.read_text())
    assert [r["layer"] for r in numbers["reports"]] == [0, 1]
    assert numbers["reports"][0]["regime"] in ("vanishing", "stable", "exploding")
    assert len(numbers["reports"][0]["singular_values"]["f"]) == 6  # per gate block, H values


def test_diagnose_a_config_with_an_input_file_uses_that_input(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"config": _config(cell="rnn")}))
    x = np.random.default_rng(0).standard_normal((13, 2, 3))
    np.save(tmp_path / "x.npy", x)
    assert main(["diagnose", str(cfg), "--input", str(tmp_path / "x.npy")]) == 0
    text = capsys.readouterr().out
    assert "T = 13" in text and "bound ‖W_hh‖·max|σ'|" in text


def test_the_probe_gradient_goes_through_the_head():
    model = SequenceModel(ModelConfig(**_config(input="tokens", vocab_size=7, output_size=7)))
    x = np.random.default_rng(1).integers(0, 7, size=(9, 2))
    diag = diagnose_model(model, x, heatmap=False)
    (rep,) = diag.reports
    assert rep.T == 9 and rep.grad_h[9] > 0 and model.training


@pytest.mark.parametrize(
    "argv,message",
    [
        (["diagnose", "/nonexistent/x"], "no such checkpoint"),
        (["diagnose", "EMPTYDIR"], "not a checkpoint, nor a run directory"),
        (["diagnose", "CFG", "--tol", "3"], "--tol"),
        (["diagnose", "CFG", "--steps", "0"], "--steps"),
        (["diagnose", "CFG", "--input", "BAD"], "--input"),
        (["diagnose", "NOTJSON"], "not a JSON config"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(_config()))
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((4, 2, 5)))  # wrong feature size
    (tmp_path / "n.json").write_text("{not json")
    (tmp_path / "empty").mkdir()
    argv = [a.replace("CFG", str(cfg)).replace("BAD", str(bad)).replace("NOTJSON", str(tmp_path / "n.json"))
            .replace("EMPTYDIR", str(tmp_path / "empty")) for a in argv]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and err.startswith("unrolled: error:")


def test_plot_of_the_linear_rnn_and_missing_matplotlib_message(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from unrolled.diagnostics import diagnose
    from unrolled.diagnostics.plot import plot_diagnosis

    diag = diagnose(linear_rnn(0.9, 2, 3, seed=0), np.ones((15, 1, 2)))
    assert plot_diagnosis(diag, tmp_path / "a.png").exists()
    for alpha in (0.1, 10.0):  # norms of 1e-400 and 1e+400: beyond float64, still drawn
        extreme = diagnose(linear_rnn(alpha, 2, 3, seed=0), np.zeros((400, 1, 2)), heatmap_points=8)
        assert plot_diagnosis(extreme, tmp_path / f"extreme{alpha}.png").exists()
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *a, **kw):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib here")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r"pip install -e \"\.\[plot\]\""):
        plot_diagnosis(diag, tmp_path / "b.png")


@pytest.mark.parametrize("output", ["sequence", "last"])
def test_with_a_target_the_norms_are_those_of_the_models_own_backward(output):
    from unrolled.nn import cross_entropy

    model = SequenceModel(ModelConfig(**_config(input="tokens", vocab_size=5, output_size=5, output=output,
                                                num_layers=2, dtype="float64")))  # fmt: skip
    rng = np.random.default_rng(2)
    x = rng.integers(0, 5, size=(7, 3))
    target = rng.integers(0, 5, size=(7, 3) if output == "sequence" else (3,))
    grads_before = {k: v.copy() for k, v in model.grads.items()}
    diag = diagnose_model(model, x, target=target, heatmap=False)
    assert all(np.array_equal(grads_before[k], model.grads[k]) for k in grads_before)  # put back
    model.eval()
    y, _ = model.forward(x)
    d_h0 = model.backward(cross_entropy(y, target)[1])  # (L, B, H) ∂L/∂h0 of the model's own backward
    for li, rep in enumerate(diag.reports):
        np.testing.assert_allclose(rep.grad_h[0], np.linalg.norm(d_h0[li], axis=1).mean(), rtol=1e-10)


def test_cli_target_needs_input_and_a_matching_shape(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(_config(output="last")))
    np.save(tmp_path / "x.npy", np.zeros((5, 2, 3)))
    np.save(tmp_path / "y.npy", np.zeros((2, 2)))
    np.save(tmp_path / "bad.npy", np.zeros((3, 2)))
    assert main(["diagnose", str(cfg), "--target", str(tmp_path / "y.npy")]) == 2
    assert "--target needs --input" in capsys.readouterr().err
    argv = ["diagnose", str(cfg), "--input", str(tmp_path / "x.npy"), "--target"]
    assert main(argv + [str(tmp_path / "bad.npy")]) == 2
    assert "target" in capsys.readouterr().err
    assert main(argv + [str(tmp_path / "y.npy")]) == 0
    assert "loss: the model's loss on --target" in capsys.readouterr().out


def test_diagnose_shows_progress_on_stderr_and_the_verdict_on_stdout(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(_config(cell="gru")))
    assert main(["diagnose", str(cfg), "--steps", "12", "--batch", "2"]) == 0
    captured = capsys.readouterr()
    assert "diagnose: Jacobian products" in captured.err and "12/12" in captured.err
    assert "verdict:" in captured.out and "Jacobian products" not in captured.out


def test_plot_without_matplotlib_is_refused_before_the_work(tmp_path, capsys, monkeypatch):
    from unrolled import _optional
    from unrolled.commands import diagnose as command

    monkeypatch.setattr(_optional, "is_installed", lambda module: module != "matplotlib")
    monkeypatch.setattr(command, "diagnose_model", lambda *a, **k: pytest.fail("diagnosed before the check"))
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(_config()))
    assert main(["diagnose", str(cfg), "--plot", str(tmp_path / "d.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        'unrolled: error: --plot needs matplotlib: pip install -e ".[plot]" in the unrolled clone, '
        "or pip install matplotlib"
    )
