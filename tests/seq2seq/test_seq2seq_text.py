"""Tokenisation, vocabularies, pair files, corpus BLEU (against sacrebleu) and the dates task."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from unrolled.apps.translate.dates import NUM_FORMATS, _formats, date_pairs, is_heldout
from unrolled.seq2seq.bleu import corpus_bleu, tokenize_13a
from unrolled.seq2seq.text import EOS, UNK, Vocab, detokenize, read_pairs, tokenize

from conftest import shared_data

SENTENCES = ["Va !", "Hi.", "J'ai faim, merci.", "Il  a 3,5 ans…", "C'est l'heure — vraiment ?"]


@pytest.mark.parametrize("mode", ["word", "char"])
def test_tokenisation_round_trips_exactly(mode):
    for s in SENTENCES:
        assert detokenize(tokenize(s, mode), mode) == " ".join(s.split())


def test_word_tokens_keep_the_space_before_french_punctuation():
    assert tokenize("Va !", "word") == ["▁Va", "▁!"]
    assert tokenize("Hi.", "word") == ["▁Hi", "."]


def test_vocabulary_caps_by_frequency_and_maps_the_rest_to_unk():
    v = Vocab.build([["a", "b", "a", "c", "a", "b"]], max_size=6)
    assert v.tokens[4:] == ["a", "b"]
    assert v.encode(["a", "c", "zzz"]) == [4, UNK, UNK]
    assert v.decode([4, 5, EOS, 4]) == ["a", "b"]
    assert Vocab(v.to_list()).tokens == v.tokens


def test_pairs_file_reads_the_chosen_columns(tmp_path):
    f = tmp_path / "p.tsv"
    f.write_text("Go.\tVa !\tCC-BY\n\nHi.\tSalut !\tCC-BY\n", encoding="utf-8")
    assert read_pairs(f) == [("Go.", "Va !"), ("Hi.", "Salut !")]
    assert read_pairs(f, source_col=2, target_col=1) == [("Va !", "Go."), ("Salut !", "Hi.")]


@pytest.mark.parametrize(
    "content, kwargs, message",
    [
        ("", {}, "no sentence pairs"),
        ("\n\n", {}, "no sentence pairs"),
        ("Go.\tVa !\nHi. Salut !\n", {}, r":2: no tab"),
        ("Go.\tVa !\n", {"target_col": 5}, r":1: column 5 requested but this line has 2 columns"),
        ("Go.\t\n", {}, "empty target"),
    ],
)
def test_bad_pairs_files_give_one_clear_line(tmp_path, content, kwargs, message):
    f = tmp_path / "p.tsv"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as e:
        read_pairs(f, **kwargs)
    assert "\n" not in str(e.value)


def test_column_numbers_are_checked():
    with pytest.raises(ValueError, match="1-based"):
        read_pairs("x", source_col=0)
    with pytest.raises(ValueError, match="both 1"):
        read_pairs("x", source_col=1, target_col=1)


# --------------------------------------------------------------------------- BLEU
def test_bleu_of_a_perfect_translation_is_100_and_of_no_overlap_is_0():
    refs = [["the cat sat on the mat"], ["a dog barked at night"]]
    assert corpus_bleu(["the cat sat on the mat", "a dog barked at night"], refs).score == pytest.approx(100)
    assert corpus_bleu(["x y z", "u v w"], refs).score == 0.0


def test_bleu_brevity_penalty_by_hand():
    # hypothesis = the first 4 of 6 reference words: every n-gram matches, BP = exp(1 - 6/4)
    s = corpus_bleu(["the cat sat on"], [["the cat sat on the mat"]])
    assert s.brevity_penalty == pytest.approx(math.exp(1 - 6 / 4))
    assert s.score == pytest.approx(100 * math.exp(1 - 6 / 4))


def test_13a_tokenisation_splits_punctuation_but_not_numbers():
    assert tokenize_13a("Hello, world! It costs 3.50 (ok).") == [
        "Hello",
        ",",
        "world",
        "!",
        "It",
        "costs",
        "3.50",
        "(",
        "ok",
        ")",
        ".",
    ]


def test_corpus_bleu_equals_sacrebleu_on_real_sentences_with_one_and_several_references():
    sacrebleu = pytest.importorskip("sacrebleu")
    path = shared_data("seq2seq/eng-fra-tatoeba-subset.txt")
    pairs = read_pairs(path)[1000:1400]
    rng = np.random.default_rng(0)
    refs = [t for _, t in pairs]
    # hypotheses: references with words dropped, swapped and replaced, so every n-gram order varies
    hyps = []
    for r in refs:
        w = r.split()
        if len(w) > 2 and rng.random() < 0.5:
            w.pop(int(rng.integers(len(w))))
        if len(w) > 1 and rng.random() < 0.5:
            i = int(rng.integers(len(w) - 1))
            w[i], w[i + 1] = w[i + 1], w[i]
        if rng.random() < 0.3:
            w[int(rng.integers(len(w)))] = "chat"
        hyps.append(" ".join(w))
    ours = corpus_bleu(hyps, [[r] for r in refs])
    theirs = sacrebleu.corpus_bleu(hyps, [refs])
    assert ours.score == pytest.approx(theirs.score, abs=1e-9)
    assert ours.precisions == pytest.approx(theirs.precisions, abs=1e-9)
    # several references per sentence (a variable number): sacrebleu takes None for a missing one
    multi = [[r, refs[(i + 7) % len(refs)]] if i % 3 else [r] for i, r in enumerate(refs)]
    streams = [[m[0] for m in multi], [m[1] if len(m) > 1 else None for m in multi]]
    assert corpus_bleu(hyps, multi).score == pytest.approx(
        sacrebleu.corpus_bleu(hyps, streams).score, abs=1e-9
    )
    # short hypotheses with no 4-gram match at all exercise the smoothing
    short = [" ".join(h.split()[:2]) for h in hyps]
    assert corpus_bleu(short, [[r] for r in refs]).score == pytest.approx(
        sacrebleu.corpus_bleu(short, [refs]).score, abs=1e-9
    )


# --------------------------------------------------------------------------- dates
def test_every_date_format_is_generated_and_targets_are_iso():
    pairs = date_pairs(3000, np.random.default_rng(0))
    d = dt.date(1998, 3, 3)
    assert "3rd of March 1998" in _formats(d) and "1998/03/03" in _formats(d)
    assert "Tuesday, March 3, 98" in _formats(d)
    assert len(set(_formats(d))) == NUM_FORMATS
    for src, iso in pairs:
        day = dt.date.fromisoformat(iso)
        assert src in _formats(day)
        assert not is_heldout(day)


def test_train_and_test_dates_share_no_day():
    rng = np.random.default_rng(1)
    train = {iso for _, iso in date_pairs(4000, rng, "train")}
    test = {iso for _, iso in date_pairs(400, rng, "test")}
    assert train and test and not train & test


def test_a_surface_form_never_means_two_dates():
    seen: dict[str, dt.date] = {}
    day = dt.date(1950, 1, 1)
    while day.year < 2050:
        for s in _formats(day):
            assert seen.setdefault(s, day) == day, s
        day += dt.timedelta(days=1)
