"""What `unrolled train classify` tells a user at the edges: a resume with nothing left to train, the summary
after Ctrl-C, and a confusion matrix whose class names are never cut."""

from __future__ import annotations

import os
import re
import signal

import numpy as np

from unrolled.apps.classify import format_confusion
from unrolled.commands import main


def _npz(tmp_path) -> str:
    rng = np.random.default_rng(1)
    N, T = 60, 6
    y = rng.integers(0, 2, N)
    x = rng.standard_normal((N, T, 2)).astype(np.float32) + np.where(y, 1.5, -1.5)[:, None, None]
    np.savez(tmp_path / "d.npz", x=x, y=y, lengths=np.full(N, T))
    return str(tmp_path / "d.npz")


def _argv(data, out, epochs):
    return ["train", "classify", "--npz", data, "--hidden", "4", "--epochs", str(epochs), "--out", out]


def test_a_resume_with_no_epochs_left_says_nothing_to_do_and_saves_nothing(tmp_path, capsys):
    data, out = _npz(tmp_path), str(tmp_path / "m")
    assert main(_argv(data, out, 3)) == 0
    before = {p: os.stat(os.path.join(out, p)).st_mtime_ns for p in ("meta.json", "training/last/meta.json")}
    capsys.readouterr()
    assert main([*_argv(data, out, 2), "--resume"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == (
        f"unrolled: error: --resume: nothing to do: the run in {out} already has 3 epochs (--epochs 2); "
        "give more --epochs to train further"
    )
    assert "saved" not in captured.out
    assert before == {p: os.stat(os.path.join(out, p)).st_mtime_ns for p in before}
    assert main([*_argv(data, out, 4), "--resume"]) == 0  # one more epoch is something to do
    assert "(4 epochs" in capsys.readouterr().out


def test_ctrl_c_right_after_an_epochs_validation_counts_that_epoch(tmp_path, capsys, monkeypatch):
    # The signal arrives during epoch 2's validation (its last step): the run stops there, exit 130, and the
    # summary counts epoch 2 — never "after 1 epochs ... best 2".
    import unrolled.apps.classify.classifier as classifier

    calls = {"n": 0}
    real_loss = classifier._loss

    def loss_then_signal(clf, items, y):
        calls["n"] += 1
        if calls["n"] == 2:  # the validation at the end of epoch 2
            os.kill(os.getpid(), signal.SIGINT)
        return real_loss(clf, items, y) - calls["n"]  # every epoch improves: the best is the last one

    monkeypatch.setattr(classifier, "_loss", loss_then_signal)
    data, out = _npz(tmp_path), str(tmp_path / "m")
    # A shell's background job (pytest started with `&`) inherits SIGINT ignored, and the command then
    # rightly leaves it so: give this test the handler a terminal's foreground job has.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert main(_argv(data, out, 10)) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    captured = capsys.readouterr()
    assert "(2 epochs, best 2," in captured.out, captured.out
    assert "stopped: interrupted after 2 epochs" in captured.err, captured.err


def test_confusion_matrix_shows_every_class_name_in_full_and_aligned():
    text = format_confusion([[12, 0, 1], [0, 9, 3], [2, 0, 140]], ["English", "Vietnamese", "A"])
    head, *rows = text.splitlines()[1:]
    assert head.split() == ["English", "Vietnamese", "A"]
    assert [r.split()[0] for r in rows] == ["English", "Vietnamese", "A"]
    name_ends = [m.end() for m in re.finditer(r"\S+", head)]
    for line in rows:  # each count ends in the column where its class name ends
        assert [m.end() for m in re.finditer(r"\S+", line)][1:] == name_ends, (head, line)


def test_a_confusion_matrix_too_wide_for_names_numbers_its_columns_and_names_every_row():
    classes = [f"language{k:02d}" for k in range(18)]
    cm = np.arange(18 * 18).reshape(18, 18).tolist()
    lines = format_confusion(cm, classes).splitlines()
    assert max(len(line) for line in lines) <= 120
    assert lines[1].split() == [str(k) for k in range(1, 19)]
    assert [line.split()[:2] for line in lines[2:]] == [[str(k + 1), c] for k, c in enumerate(classes)]
