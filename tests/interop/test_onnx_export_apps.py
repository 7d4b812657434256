"""``unrolled export`` of every model kind from a run directory: each file run by onnxruntime equals unrolled,
carries what a caller needs in its metadata (vocabulary, labels, scaler, state layout), and can be used
without unrolled — generating text (examples/onnx_generate.py) and translating by its two graphs."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx not installed (pip install 'unrolled[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'unrolled[onnx]')")

from unrolled.commands import main  # noqa: E402

from conftest import assert_close  # noqa: E402

TOL = 1e-5  # relative to the values' scale
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "onnx_generate.py"
TEXT = "the cat sat on the mat. a dog ran to the cat, and the cat ran away.\n" * 30


def _meta(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(sess, feeds: dict) -> dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds), strict=True))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One tiny trained run directory per model kind, through the real command line."""
    d = tmp_path_factory.mktemp("runs")
    (d / "t.txt").write_text(TEXT, encoding="utf-8")
    rng = np.random.default_rng(0)
    lines = ["text,label"]
    for _ in range(60):
        first = rng.choice(["a", "b"])
        lines.append(
            first + "".join(rng.choice(list("cdefg"), size=4)) + ("," + ("yes" if first == "a" else "no"))
        )
    (d / "c.csv").write_text("\n".join(lines) + "\n")
    (d / "s.csv").write_text("y\n" + "\n".join(f"{10 + 3 * np.sin(i / 3):.4f}" for i in range(100)) + "\n")
    argv = {
        "charlm": ["train", "charlm", "--text", str(d / "t.txt"), "--steps", "30", "--val-every", "10"]
        + [
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
        ]
        + ["--quiet"],
        "classify": ["train", "classify", "--csv", str(d / "c.csv"), "--text-column", "text", "--hidden", "8"]
        + ["--epochs", "2"],
        "forecast": ["train", "forecast", "--csv", str(d / "s.csv"), "--column", "y", "--lookback", "6"]
        + ["--horizon", "3", "--epochs", "2", "--no-arima", "--hidden", "8"],
        "translate": ["train", "translate", "--dates", "100", "--steps", "5", "--eval-every", "5"]
        + ["--hidden", "8", "--embed-dim", "8", "--batch", "16", "--quiet"],
    }
    for kind, args in argv.items():
        assert main([*args, "--out", str(d / kind)]) == 0, kind
    return {kind: d / kind for kind in argv}


def _export(run: Path, out: Path, capsys, *extra: str) -> tuple[str, str]:
    capsys.readouterr()
    assert main(["export", str(run), "--onnx", str(out), "--verify", *extra]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


# --------------------------------------------------------------------------- character models
def test_a_char_model_exports_from_its_run_directory_as_a_step_graph_with_its_vocabulary(
    runs, tmp_path, capsys
):
    from unrolled.apps import charlm

    out = tmp_path / "lm.onnx"
    printed, err = _export(runs["charlm"], out, capsys)
    assert f"using {runs['charlm'] / 'best'}" in err  # best/ over last/, said on stderr
    assert "max |Δy|" in printed
    model, vocab, _ = charlm.load(runs["charlm"] / "best")
    meta = _meta(out)
    assert meta["unrolled.app"] == "charlm"
    assert json.loads(meta["unrolled.vocab"]) == list(vocab.chars)
    assert meta["unrolled.default_prime"] == charlm.default_prime(vocab)
    assert meta["unrolled.dtype"] == "float32"
    # a new model reserves <unk>: a caller may read unknown characters as it
    assert vocab.unk_id is not None
    assert json.loads(meta["unrolled.unknown"]) == {"policy": "map", "unk_id": vocab.unk_id}
    assert json.loads(meta["unrolled.sampling"]) == {"temperature": 0.8, "top_k": None}
    layout = json.loads(meta["unrolled.state"])
    assert layout == [
        {"input": "h0", "output": "h_n", "shape": [1, "B", 24]},
        {"input": "c0", "output": "c_n", "shape": [1, "B", 24]},
    ]
    sess = _session(out)
    assert [i.name for i in sess.get_inputs()] == ["x", "h0", "c0"]  # no lengths: a streaming graph
    # The prime in one call, then one character at a time with the carried state: equal to unrolled's step.
    ids = vocab.encode("the cat").astype(np.int64)
    zeros = np.zeros((1, 1, 24), np.float32)
    got = _run(sess, {"x": ids[:, None], "h0": zeros, "c0": zeros})
    want, state = model(ids[:, None])
    assert_close(got["y"], want, TOL)
    nxt = np.array([int(np.argmax(want[-1, 0]))])
    step_want, _ = model.step(nxt, state)
    step = _run(sess, {"x": nxt[None].astype(np.int64), "h0": got["h_n"], "c0": got["c_n"]})
    assert_close(step["y"][0], step_want, TOL)


def test_the_example_generates_with_onnxruntime_alone_as_unrolled_sample_does(runs, tmp_path, capsys):
    out = tmp_path / "lm.onnx"
    _export(runs["charlm"], out, capsys)
    cmd = [sys.executable, str(EXAMPLE), str(out), "--prime", "the c", "--length", "60"]
    greedy = subprocess.run([*cmd, "--temperature", "0"], capture_output=True, text=True, timeout=120)
    assert greedy.returncode == 0, greedy.stderr
    capsys.readouterr()
    best = str(runs["charlm"] / "best")  # the checkpoint export read
    assert main(["sample", best, "--prime", "the c", "--length", "60", "--temperature", "0"]) == 0
    assert greedy.stdout == capsys.readouterr().out
    assert len(set(greedy.stdout)) > 2  # the model writes more than one character: the test can fail
    sampled = subprocess.run([*cmd, "--seed", "3"], capture_output=True, text=True, timeout=120)
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.startswith("the c") and len(sampled.stdout) == len("the c") + 60 + 1


def test_the_example_imports_only_numpy_onnxruntime_and_the_standard_library():
    tree = ast.parse(EXAMPLE.read_text(encoding="utf-8"))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "unrolled" not in imported
    assert imported - set(sys.stdlib_module_names) == {"numpy", "onnxruntime"}


# --------------------------------------------------------------------------- classifiers and forecasters
def test_a_classifier_exports_with_its_labels_and_vocabulary(runs, tmp_path, capsys):
    from unrolled.apps import classify

    out = tmp_path / "cl.onnx"
    _, err = _export(runs["classify"], out, capsys)
    assert f"using {runs['classify']}" in err
    clf, _, _ = classify.load(runs["classify"])
    meta = _meta(out)
    assert meta["unrolled.app"] == "classify" and meta["unrolled.input"] == "text"
    assert json.loads(meta["unrolled.labels"]) == clf.classes == ["no", "yes"]
    chars = json.loads(meta["unrolled.vocab"])
    assert chars[0] == "<unk>" and chars == clf.vocab.chars
    # A user encodes with the metadata alone and gets unrolled's probabilities.
    words = ["acdef", "bggc", "ax"]  # 'x' was never seen: id 0
    index = {c: i for i, c in enumerate(chars)}
    x = np.zeros((5, 3), np.int64)
    for b, w in enumerate(words):
        x[: len(w), b] = [index.get(c, 0) for c in w]
    (logits,) = _session(out).run(["y"], {"x": x, "lengths": np.array([len(w) for w in words], np.int32)})
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    assert_close(p / p.sum(axis=1, keepdims=True), clf.predict_proba(words), TOL)


def test_a_forecaster_exports_with_its_scaler_lookback_and_horizon(runs, tmp_path, capsys):
    from unrolled.apps import forecast

    out = tmp_path / "fc.onnx"
    _export(runs["forecast"], out, capsys, "--no-lengths")
    fc, _, _ = forecast.load(runs["forecast"])
    meta = _meta(out)
    assert meta["unrolled.app"] == "forecast" and meta["unrolled.strategy"] == "direct"
    assert (int(meta["unrolled.lookback"]), int(meta["unrolled.horizon"])) == (6, 3)
    scaler = json.loads(meta["unrolled.scaler"])
    assert scaler == fc.scaler.to_dict() and json.loads(meta["unrolled.columns"]) == ["y"]
    assert "y · std[0] + mean[0]" in meta["unrolled.io"]
    # The forecast in the data's units from the metadata alone equals unrolled's.
    raw = np.array([[10 + 3 * np.sin(i / 3)] for i in range(40)])
    z = (raw[-6:] - np.array(scaler["mean"])) / np.array(scaler["std"])
    (y,) = _session(out).run(["y"], {"x": z[:, None, :].astype(np.float32)})
    assert_close(y[0] * scaler["std"][0] + scaler["mean"][0], fc.forecast(raw, np.array([40]))[0], TOL)


# --------------------------------------------------------------------------- translation
def _onnx_greedy(enc, dec, meta: dict, sentence: str, tokenize) -> list[int]:
    """Greedy decoding with the two graphs and the metadata, as a user without unrolled would."""
    sp = json.loads(meta["unrolled.specials"])
    index = {t: i for i, t in enumerate(json.loads(meta["unrolled.src_vocab"]))}
    ids = [index.get(t, sp["<unk>"]) for t in tokenize(sentence, meta["unrolled.tokenizer"])] + [sp["<eos>"]]
    encoded = _run(
        enc, {"src": np.array(ids, np.int64)[:, None], "src_lengths": np.array([len(ids)], np.int32)}
    )
    layout = json.loads(meta["unrolled.state"])
    feeds = dict(encoded)
    y, out = np.array([sp["<bos>"]], np.int64), []
    for _ in range(2 * len(ids) + 10):
        step = _run(dec, {**feeds, "y_prev": y})
        y = step["logits"].argmax(axis=1)
        out.append(int(y[0]))
        if y[0] == sp["<eos>"]:
            break
        feeds.update({s["input"]: step[s["output"]] for s in layout})
    return out


def test_a_translation_model_exports_as_encoder_and_decoder_step_graphs(runs, tmp_path, capsys):
    from unrolled.apps import translate
    from unrolled.seq2seq.text import tokenize

    printed, _ = _export(runs["translate"], tmp_path / "tr.onnx", capsys)
    enc_path, dec_path = tmp_path / "tr.encoder.onnx", tmp_path / "tr.decoder.onnx"
    assert "tr.encoder.onnx" in printed and "tr.decoder.onnx" in printed and "max |Δlogits|" in printed
    tr, _ = translate.load(runs["translate"])
    meta = _meta(dec_path)
    assert meta == {**_meta(enc_path), "unrolled.kind": "Seq2SeqDecoder"}
    assert json.loads(meta["unrolled.src_vocab"]) == tr.src_vocab.to_list()
    assert json.loads(meta["unrolled.tgt_vocab"]) == tr.tgt_vocab.to_list()
    assert json.loads(meta["unrolled.specials"]) == {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3}
    enc, dec = _session(enc_path), _session(dec_path)
    sentences = ["3rd of March 1998", "Tuesday, May 4, 21", "12/31/1999", "Ωmega 12"]
    want = [tr.translate([s])[0][1].tokens for s in sentences]  # alone: max_len is per batch
    got = [_onnx_greedy(enc, dec, meta, s, tokenize) for s in sentences]
    assert got == want


def test_from_onnx_rebuilds_the_translation_model_from_either_half(runs, tmp_path, capsys):
    from unrolled.apps import translate
    from unrolled.interop.onnx import from_onnx

    _export(runs["translate"], tmp_path / "tr.onnx", capsys)
    tr, _ = translate.load(runs["translate"])
    for half in ("encoder", "decoder"):
        model = from_onnx(tmp_path / f"tr.{half}.onnx")
        assert model.params.keys() == tr.model.params.keys()
        for k, v in tr.model.params.items():
            np.testing.assert_array_equal(model.params[k], v.astype(np.float32), err_msg=k)
    (tmp_path / "tr.decoder.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="other half"):
        from_onnx(tmp_path / "tr.encoder.onnx")


def test_export_refuses_a_directory_without_a_model_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), "--onnx", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nor a run directory with best/ or last/" in err
