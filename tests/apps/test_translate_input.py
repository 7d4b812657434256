"""What `unrolled translate` does with input a model cannot handle (refused in one line) and how sure it is
of what it answers (the confidence on stderr)."""

from __future__ import annotations

import math

import pytest

from unrolled.apps.translate import load
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
    assert main(["train", "translate", "--dates", "300", *TINY, "--out", str(out)]) == 0
    return out


def _one_line_error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and len(err.splitlines()) == 1, captured
    return err


def test_an_empty_input_is_refused(dates_model, capsys):
    assert _one_line_error(capsys, ["translate", str(dates_model), ""]) == (
        "unrolled: error: translate: input is empty: give a sentence to translate"
    )
    assert "input is empty" in _one_line_error(capsys, ["translate", str(dates_model), "   "])


def test_characters_the_model_never_saw_are_named_and_refused(dates_model, capsys):
    assert _one_line_error(capsys, ["translate", str(dates_model), "Ωmega 12 🎉"]) == (
        "unrolled: error: translate: input has characters the model never saw: 'Ω', '🎉'"
    )


def test_on_standard_input_the_refusal_names_the_sentence(dates_model, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("3rd of March 1998\n12.05.2001 ☃\n"))
    err = _one_line_error(capsys, ["translate", str(dates_model)])
    assert err == "unrolled: error: translate: sentence 2 has characters the model never saw: '☃'"


def test_a_single_sentence_gets_its_confidence_on_stderr(dates_model, capsys):
    capsys.readouterr()
    assert main(["translate", str(dates_model), "3rd of March 1998"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1  # stdout stays the translation alone
    using, line = captured.err.splitlines()  # which model was read, then the confidence
    assert using.startswith("using ")
    tr, _ = load(dates_model)
    ((_, hyp),) = tr.translate(["3rd of March 1998"])
    mean_p = math.exp(hyp.score / len(hyp.tokens))
    assert line.startswith(
        f"confidence {mean_p:.2f} (mean probability of the {len(hyp.tokens)} output tokens"
    )
    assert f"log p = {hyp.score:.2f}" in line
    assert ("low" in line) == (mean_p < 0.5)


def test_lines_from_standard_input_get_a_confidence_each_only_with_verbose(dates_model, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("3rd of March 1998\n1998/03/04\n"))
    assert main(["translate", str(dates_model)]) == 0
    assert _without_using(capsys.readouterr().err) == ""
    monkeypatch.setattr("sys.stdin", io.StringIO("3rd of March 1998\n1998/03/04\n"))
    assert main(["translate", str(dates_model), "--verbose"]) == 0
    err = _without_using(capsys.readouterr().err)
    assert [s.split()[0] for s in err.splitlines()] == ["confidence", "confidence"]


def test_decoding_many_sentences_shows_progress_only_when_asked(dates_model, capsys):
    tr, _ = load(dates_model)
    sentences = ["3rd of March 1998"] * 5
    tr.translate(sentences, batch_size=2)
    assert _without_using(capsys.readouterr().err) == ""
    tr.translate(sentences, batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "translating" in err and "5/5" in err


def _without_using(err: str) -> str:
    """stderr less the one ``using DIR (...)`` line every command prints about the model it read."""
    return "".join(line for line in err.splitlines(keepends=True) if not line.startswith("using "))
