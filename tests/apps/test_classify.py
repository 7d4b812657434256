"""Sequence classification: padding never changes a prediction, the file layouts, the split, the class
weights, a toy task learned through the real commands, and bad input refused in one line."""

from __future__ import annotations

import numpy as np
import pytest

from unrolled.apps.classify import Classifier, ClassifyConfig, build, class_weights
from unrolled.apps.classify.sequences import (
    CharVocab,
    SequenceDataset,
    load_long_csv,
    load_npz,
    load_text_folder,
    stratified_split,
)
from unrolled.commands import main

from conftest import shared_data


# --------------------------------------------------------------------------- padding invariance
@pytest.mark.parametrize(
    "cell, pooling, bidirectional",
    [("lstm", "last", False), ("gru", "mean", True), ("rnn", "last", True), ("lstm", "mean", False)],
)
def test_padding_a_batch_differently_never_changes_a_sequences_prediction(cell, pooling, bidirectional):
    rng = np.random.default_rng(0)
    items = [rng.standard_normal((n, 3)).astype(np.float32) for n in (5, 1, 9, 3, 17, 2)]
    ds = SequenceDataset(items, np.array([0, 1, 2, 0, 1, 2]), ["a", "b", "c"], "dense")
    cfg = ClassifyConfig(
        npz="x.npz", cell=cell, pooling=pooling, bidirectional=bidirectional, hidden=8, seed=1
    )
    clf = Classifier(build(cfg, ds, None), ds.classes, None)
    alone = np.concatenate([clf.predict_proba([x]) for x in items])
    together = clf.predict_proba(items)
    in_pairs = clf.predict_proba(items, batch_size=2)
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-6)
    np.testing.assert_allclose(in_pairs, alone, rtol=0, atol=1e-6)
    # whatever the padding holds (here: large garbage instead of zeros), with lengths it is never read
    T = 17
    x = rng.standard_normal((T, len(items), 3)).astype(np.float32) * 100
    for b, s in enumerate(items):
        x[: len(s), b] = s
    logits, _ = clf.model(x, lengths=np.array([len(s) for s in items]))
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(1, keepdims=True), alone, rtol=0, atol=1e-6)


def test_text_predictions_do_not_depend_on_the_other_texts_in_the_batch():
    texts = ["Ng", "Abramov", "O'Neill", "Schwarzenegger", "Li"]
    ds = SequenceDataset(texts, np.array([0, 1, 0, 1, 0]), ["x", "y"], "text")
    vocab = CharVocab.build(texts)
    cfg = ClassifyConfig(text_dir="names", hidden=8, bidirectional=True, seed=2)
    clf = Classifier(build(cfg, ds, vocab), ds.classes, vocab)
    alone = np.concatenate([clf.predict_proba([t]) for t in texts])
    np.testing.assert_allclose(clf.predict_proba(texts), alone, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- data
def test_char_vocab_maps_unseen_characters_to_unknown():
    v = CharVocab.build(["abc", "cab"])
    np.testing.assert_array_equal(v.encode("abz"), [1, 2, 0])
    assert len(v) == 4


def test_stratified_split_is_disjoint_complete_seeded_and_keeps_class_shares():
    y = np.array([0] * 80 + [1] * 20)
    tr, va, te = stratified_split(y, 0.2, 0.1, np.random.default_rng(0))
    assert len(np.intersect1d(tr, te)) == len(np.intersect1d(tr, va)) == len(np.intersect1d(va, te)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va, te])), np.arange(100))
    assert (y[te] == 1).sum() == 4 and (y[te] == 0).sum() == 16
    again = stratified_split(y, 0.2, 0.1, np.random.default_rng(0))
    np.testing.assert_array_equal(again[2], te)


def test_balanced_class_weights_give_every_class_the_same_total_weight():
    y = np.array([0, 0, 0, 1])
    w = class_weights(y, 2, "balanced")
    np.testing.assert_allclose(w, [4 / 6, 2.0])
    assert w[y].sum() == pytest.approx(4.0) and (w[0] * 3) == pytest.approx(w[1] * 1)


def test_npz_and_long_csv_layouts_give_the_same_sequences(tmp_path):
    x = np.zeros((3, 4, 2), dtype=np.float32)
    x[0, :2] = [[1, 2], [3, 4]]
    x[1, :4] = 5
    x[2, :1] = [[6, 7]]
    np.savez(tmp_path / "d.npz", x=x, y=np.array(["cat", "dog", "cat"]), lengths=np.array([2, 4, 1]))
    a = load_npz(tmp_path / "d.npz")
    rows = ["id,label,f1,f2", "s0,cat,1,2", "s1,dog,5,5", "s0,cat,3,4", "s1,dog,5,5", "s2,cat,6,7"]
    rows += ["s1,dog,5,5", "s1,dog,5,5"]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    b = load_long_csv(tmp_path / "d.csv", "id", "label")
    assert a.classes == b.classes == ["cat", "dog"]
    np.testing.assert_array_equal(a.labels, b.labels)
    for u, v in zip(a.items, b.items, strict=True):
        np.testing.assert_array_equal(u, v)


def test_names_folder_reads_eighteen_languages():
    ds = load_text_folder(shared_data("classification/names"))
    assert len(ds.classes) == 18 and len(ds.items) == 20050
    lengths = [len(t) for t in ds.items]
    assert min(lengths) < 4 and max(lengths) > 15  # truly variable length


def test_digits_read_row_by_row_and_pixel_by_pixel():
    pytest.importorskip("sklearn", reason="scikit-learn not installed (unrolled[data])")
    from unrolled.apps.classify.sequences import load_builtin

    rows, pixels = load_builtin("digits-rows"), load_builtin("digits-pixels")
    assert rows.items[0].shape == (8, 8) and pixels.items[0].shape == (64, 1)
    np.testing.assert_array_equal(rows.items[5].ravel(), pixels.items[5].ravel())
    assert len(rows.items) == 1797 and 0.0 <= rows.items[0].min() and rows.items[0].max() <= 1.0


# --------------------------------------------------------------------------- the commands
def test_train_and_classify_text_end_to_end(tmp_path, capsys):
    # label: which of 'a' / 'b' starts the word — the model must remember the first character to the end
    rng = np.random.default_rng(0)
    lines = ["text,label"]
    for _ in range(300):
        first = rng.choice(["a", "b"])
        word = first + "".join(rng.choice(list("cdefg"), size=rng.integers(1, 8)))
        lines.append(f"{word},{'A' if first == 'a' else 'B'}")
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    out = str(tmp_path / "m")
    argv = ["train", "classify", "--csv", str(tmp_path / "t.csv"), "--text-column", "text"]
    argv += [
        "--hidden",
        "16",
        "--epochs",
        "25",
        "--patience",
        "25",
        "--batch",
        "16",
        "--lr",
        "0.01",
        "--out",
        out,
    ]
    assert main(argv) == 0
    report = capsys.readouterr().out
    acc = float(report.split("accuracy ")[1].split()[0])
    assert acc >= 0.95, report
    (tmp_path / "new.txt").write_text("acdef\nbgg\n")
    assert main(["classify", out, str(tmp_path / "new.txt")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3  # header + one line per text, on stdout
    assert main(["classify", out, str(tmp_path / "new.txt"), "--output", str(tmp_path / "p.csv")]) == 0
    pred = (tmp_path / "p.csv").read_text().splitlines()
    assert pred[0] == "sequence,predicted,probability"
    assert [p.split(",")[:2] for p in pred[1:]] == [["acdef", "A"], ["bgg", "B"]]


def test_train_classify_on_an_npz_with_mean_pooling_and_class_weights(tmp_path, capsys):
    rng = np.random.default_rng(1)
    N, T = 120, 10
    lengths = rng.integers(2, T + 1, N)
    y = rng.integers(0, 2, N)
    x = np.zeros((N, T, 2), dtype=np.float32)
    for i in range(N):
        x[i, : lengths[i]] = rng.standard_normal((lengths[i], 2)) + (1.5 if y[i] else -1.5)
    np.savez(tmp_path / "d.npz", x=x, y=y, lengths=lengths)
    out = str(tmp_path / "m")
    argv = ["train", "classify", "--npz", str(tmp_path / "d.npz"), "--pooling", "mean", "--bidirectional"]
    argv += ["--class-weights", "balanced", "--cell", "gru", "--hidden", "8", "--epochs", "10", "--out", out]
    assert main(argv) == 0
    assert float(capsys.readouterr().out.split("accuracy ")[1].split()[0]) >= 0.9
    assert main(["classify", out, str(tmp_path / "d.npz")]) == 0
    captured = capsys.readouterr()
    assert (
        len(captured.out.splitlines()) == N + 1 and "accuracy on the 120 labelled sequences" in captured.err
    )


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("unrolled: error:") and "\n" not in err
    return err


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    out = str(tmp_path / "m")
    assert "unknown dataset 'mnist'" in _error(
        capsys, ["train", "classify", "--dataset", "mnist", "--out", out]
    )
    np.savez(tmp_path / "nolabel.npz", x=np.zeros((3, 2, 1)))
    assert "no array 'y'" in _error(
        capsys, ["train", "classify", "--npz", str(tmp_path / "nolabel.npz"), "--out", out]
    )
    (tmp_path / "bad.csv").write_text("id,label,f\na,x,1\na,y,2\n")
    err = _error(
        capsys, ["train", "classify", "--csv", str(tmp_path / "bad.csv"), "--id-column", "id", "--out", out]
    )
    assert "changes label" in err
    (tmp_path / "word.csv").write_text("id,label,f\na,x,1\nb,y,oops\n")
    err = _error(
        capsys, ["train", "classify", "--csv", str(tmp_path / "word.csv"), "--id-column", "id", "--out", out]
    )
    assert "'oops' is not a number" in err
    err = _error(capsys, ["train", "classify", "--csv", str(tmp_path / "word.csv"), "--out", out])
    assert "--id-column" in err


def test_exact_repeats_of_a_sequence_and_label_are_found_and_dropped():
    a = np.ones((3, 2), dtype=np.float32)
    ds = SequenceDataset([a, a.copy(), a, 2 * a], np.array([0, 0, 1, 0]), ["x", "y"], "dense")
    np.testing.assert_array_equal(ds.repeats(), [1])  # the same array with another label is no repeat
    assert len(ds.deduplicated().items) == 3
    texts = SequenceDataset(["ab", "ab", "ba"], np.array([1, 1, 0]), ["x", "y"], "text")
    assert texts.deduplicated().items == ["ab", "ba"]
