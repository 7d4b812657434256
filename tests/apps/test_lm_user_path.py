"""The language model's user path: unknown characters, which checkpoint a command reads, units, loops."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from unrolled.apps.charlm import CharLMConfig, evaluate, fit, load, load_corpus
from unrolled.apps.charlm.lm import RunSummary, plural, report, scored_predictions
from unrolled.apps.charlm.sampling import apply_repetition_penalty, generate, repeating_period
from unrolled.apps.charlm.text import UNK, TextError, UnknownCharacterError, Vocabulary
from unrolled.checkpoint import save_checkpoint, save_model
from unrolled.models import ModelConfig, SequenceModel
from unrolled.nn import log_softmax
from unrolled.resolve import resolve_model

TEXT = "the cat sat on the mat. the dog sat on the log. a cat and a dog sat on a mat and a log.\n" * 20
OTHER = "the cat = the dog; the mat == the log. é\n" * 3  # '=', ';', 'é' are not in TEXT
TINY = ["--layers", "1", "--hidden", "16", "--embed", "6", "--seq-len", "12", "--batch", "4", "--lr", "0.02"]


def unrolled(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    env.pop("UNROLLED_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "unrolled.cli", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env, encoding="utf-8",
    )  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny charlm run (best/ and last/) trained through the real command line, with TEXT and OTHER."""
    d = tmp_path_factory.mktemp("lm")
    (d / "text.txt").write_text(TEXT, encoding="utf-8")
    (d / "other.txt").write_text(OTHER, encoding="utf-8")
    r = unrolled("train", "charlm", "--text", d / "text.txt", "--out", d / "run", "--steps", "20",
                 "--val-every", "5", "--quiet", *TINY)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return d / "run"


def tiny_model(V: int, seed: int = 3, dtype: str = "float64") -> SequenceModel:
    return SequenceModel(
        ModelConfig(vocab_size=V, embed_dim=5, hidden_size=8, num_layers=1, dtype=dtype, seed=seed)
    )


# --------------------------------------------------------------------------- the <unk> id
def test_a_new_vocabulary_reserves_an_unk_id_that_no_text_produces(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text(TEXT, encoding="utf-8")
    corpus = load_corpus([p])
    vocab = corpus.vocab
    assert vocab.unk_id is not None and vocab.chars[vocab.unk_id] == UNK
    assert set(vocab.text_chars) == set(TEXT)
    assert not (corpus.ids == vocab.unk_id).any()
    with pytest.raises(UnicodeDecodeError):  # no UTF-8 byte sequence decodes to it
        UNK.encode("utf-8", "surrogatepass").decode("utf-8")
    assert Vocabulary.from_json(json.loads(json.dumps(vocab.to_json()))) == vocab  # survives meta.json


def test_skip_leaves_unknown_characters_out_and_counts_them():
    v = Vocabulary.from_chars("abc", unk=True)
    counts: Counter = Counter()
    ids = v.encode("a=b==cé", unknown="skip", counts=counts)
    assert v.decode(ids) == "abc"
    assert counts == Counter({"=": 3, "é": 1})


def test_map_reads_each_unknown_character_as_unk():
    v = Vocabulary.from_chars("abc", unk=True)
    counts: Counter = Counter()
    ids = v.encode("a=bé", unknown="map", counts=counts)
    assert ids.tolist() == [v.chars.index("a"), v.unk_id, v.chars.index("b"), v.unk_id]
    assert counts == Counter({"=": 1, "é": 1})


def test_map_is_refused_for_a_vocabulary_saved_before_unk_existed():
    old = Vocabulary.from_chars("abc")
    assert old.unk_id is None
    with pytest.raises(TextError, match="--unknown map: this model has no <unk> id.*use --unknown skip"):
        old.encode("a=b", unknown="map")
    assert old.decode(old.encode("a=b", unknown="skip")) == "ab"


def test_error_names_every_unknown_character_at_once(tmp_path):
    p = tmp_path / "o.txt"
    p.write_text(OTHER, encoding="utf-8")
    with pytest.raises(UnknownCharacterError) as e:
        load_corpus([p], Vocabulary.from_chars(TEXT, unk=True))
    assert e.value.chars == (";", "=", "é")
    assert "3 characters not in the model's vocabulary" in str(e.value) and "'é' (U+00E9)" in str(e.value)


def test_evaluate_with_ignore_id_is_the_mean_over_the_scored_predictions_only():
    V, unk = 6, 5
    model = tiny_model(V)
    ids = np.random.default_rng(0).integers(0, unk, 61).astype(np.uint8)  # no <unk> ...
    ids[[3, 17, 18, 40]] = unk  # ... but at these four positions
    model.eval()
    y, _ = model.forward(ids[:-1, None].astype(np.int64))
    nll = -log_softmax(y[:, 0])[np.arange(60), ids[1:]]
    keep = ids[1:] != unk
    assert scored_predictions(ids, unk) == keep.sum() == 56
    assert evaluate(model, ids, batch=1, seq_len=7, ignore_id=unk) == pytest.approx(
        nll[keep].mean(), rel=1e-12
    )
    assert evaluate(model, ids, batch=1) == pytest.approx(nll.mean(), rel=1e-12)  # unchanged without it


def test_skip_scores_the_text_as_if_the_unknown_characters_were_absent(tmp_path):
    vocab = Vocabulary.from_chars(TEXT, unk=True)
    model = tiny_model(vocab.size)
    p = tmp_path / "o.txt"
    p.write_text(OTHER, encoding="utf-8")
    corpus = load_corpus([p], vocab, "skip")
    clean = vocab.encode(OTHER.replace("=", "").replace(";", "").replace("é", ""))
    assert corpus.counts == Counter({"=": 9, ";": 3, "é": 3}) and corpus.n_unknown == 15
    assert evaluate(model, corpus.ids) == evaluate(model, clean)


# --------------------------------------------------------------------------- eval, sample, resume
def test_eval_refuses_unknown_characters_in_one_line_naming_them_and_the_options(run):
    r = unrolled("eval", run, "--text", run.parent / "other.txt")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for frag in ("other.txt", "'='", "';'", "'é'", "--unknown skip", "--unknown map"):
        assert frag in r.stderr, r.stderr


@pytest.mark.parametrize("policy, scored", [("skip", len(OTHER) - 15 - 1), ("map", len(OTHER) - 1 - 15)])
def test_eval_reports_what_it_skipped_or_mapped_and_what_it_scored(run, policy, scored):
    r = unrolled("eval", run, "--text", run.parent / "other.txt", "--unknown", policy)
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.splitlines()
    assert f"over {scored:,} predictions" in first and float(first.split()[0]) > 0
    assert second.startswith(f"--unknown {policy}: 15 characters of 3 kinds")
    assert "'=' (U+003D) ×9" in second and "';' (U+003B) ×3" in second and "'é' (U+00E9) ×3" in second
    assert ("left out" if policy == "skip" else "read as <unk>") in second


def test_eval_of_a_model_from_before_unk_refuses_map_and_skips(tmp_path):
    vocab = Vocabulary.from_chars(TEXT)  # no <unk>: the vocabulary an older unrolled saved
    d = tmp_path / "old"
    save_model(d, tiny_model(vocab.size, dtype="float32"), {"app": "charlm", "vocab": vocab.to_json()})
    (tmp_path / "other.txt").write_text(OTHER, encoding="utf-8")
    r = unrolled("eval", d, "--text", tmp_path / "other.txt", "--unknown", "map")
    assert r.returncode == 2 and "no <unk> id" in r.stderr and "--unknown skip" in r.stderr, r.stderr
    r = unrolled("eval", d, "--text", tmp_path / "other.txt")
    assert "--unknown skip" in r.stderr and "--unknown map" not in r.stderr, r.stderr
    r = unrolled("eval", d, "--text", tmp_path / "other.txt", "--unknown", "skip")
    assert r.returncode == 0 and "left out" in r.stdout, r.stderr


def test_resume_on_text_with_new_characters_says_exactly_what_to_do(run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(run, out)
    (out / "run.lock").unlink(missing_ok=True)
    other = run.parent / "other.txt"
    r = unrolled("train", "charlm", "--out", out, "--resume", "--text", other, "--steps", "25", "--quiet")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for frag in ("'='", "';'", "'é'", "--unknown skip", "--unknown map", "another --out"):
        assert frag in r.stderr, r.stderr
    r = unrolled("train", "charlm", "--out", out, "--resume", "--text", other, "--steps", "25", "--quiet",
                 "--unknown", "map")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "--unknown map: 15 characters the model has no id for, read as <unk>" in r.stdout
    _, vocab, meta = load(out / "last")
    assert meta["trainer"]["step"] == 25 and vocab.unk_id is not None
    r = unrolled("train", "charlm", "--out", tmp_path / "new", "--text", other, "--unknown", "skip")
    assert r.returncode == 2 and "only with --resume" in r.stderr


def test_sample_skips_or_maps_unknown_prime_characters_and_never_draws_unk(run):
    for policy in ("skip", "map"):
        r = unrolled(
            "sample", run, "--prime", "the =cat", "--unknown", policy, "--length", "200", "--seed", "0"
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("the =cat") and UNK not in r.stdout
        assert set(r.stdout[len("the =cat") :]) <= set(TEXT)


# --------------------------------------------------------------------------- which checkpoint
def _trainer_checkpoint(d: Path, step: int, **meta) -> None:
    save_checkpoint(
        d, {"model/w": np.zeros(2, np.float32)}, {"kind": "unrolled.train", "trainer": {"step": step}, **meta}
    )


def test_a_run_directory_means_best_then_last_and_a_checkpoint_directory_itself(tmp_path):
    r = tmp_path / "run"
    _trainer_checkpoint(r / "last", 30, app="charlm")
    assert resolve_model(r).path == r / "last"  # no best/: last/
    _trainer_checkpoint(r / "best", 20, app="charlm")
    chosen = resolve_model(r)
    assert (chosen.path, chosen.which) == (r / "best", "best")
    assert chosen.describe() == f"using {r / 'best'} (best validation, step 20)"
    assert resolve_model(r, "last").describe() == f"using {r / 'last'} (last checkpoint, step 30)"
    assert resolve_model(r / "last").path == r / "last"
    with pytest.raises(ValueError, match="no such directory"):
        resolve_model(tmp_path / "nope")
    with pytest.raises(ValueError, match="--checkpoint: expected one of best, last"):
        resolve_model(r, "first")


def test_a_run_that_saved_its_best_weights_at_its_top_is_read_there(tmp_path):
    r = tmp_path / "clf"  # classify / forecast: the model at the top, training state in training/
    save_checkpoint(r, {"model/w": np.zeros(2, np.float32)}, {"app": "classify"})
    _trainer_checkpoint(r / "training" / "best", 12)
    _trainer_checkpoint(r / "training" / "last", 15)
    assert resolve_model(r).describe() == f"using {r} (best validation, step 12)"
    assert resolve_model(r, "best").path == r
    with pytest.raises(ValueError, match="training state only"):
        resolve_model(r, "last")
    t = tmp_path / "tr"  # translate: its train/last carries the translator's meta, so it is a model
    save_checkpoint(t, {"model/w": np.zeros(2, np.float32)}, {"app": "translate"})
    _trainer_checkpoint(t / "train" / "last", 40, app="translate")
    assert resolve_model(t, "last").path == t / "train" / "last"


def test_sample_and_eval_say_on_stderr_which_checkpoint_they_used(run):
    r = unrolled("eval", run, "--text", run.parent / "text.txt")
    assert r.stderr.strip() == f"using {run / 'best'} (best validation, step {_best_step(run)})", r.stderr
    r = unrolled("sample", run, "--length", "5", "--checkpoint", "last")
    assert r.stderr.strip() == f"using {run / 'last'} (last checkpoint, step 20)", r.stderr


def _best_step(run: Path) -> int:
    return json.loads((run / "best" / "meta.json").read_text())["meta"]["trainer"]["step"]


# --------------------------------------------------------------------------- units and wording
def test_the_training_bar_shows_bits_and_the_lines_say_kernels_and_steps_once(tmp_path, capsys):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    cfg = CharLMConfig(layers=1, hidden=8, embed=4, seq_len=8, batch=2, steps=1, val_every=1)
    lines: list[str] = []
    fit(cfg, [tmp_path / "t.txt"], tmp_path / "run", progress=True, log=lines.append)
    err = capsys.readouterr().err
    loss = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["loss"]
    assert f"bits={loss / math.log(2):.4f}" in err and "loss=" not in err, err
    assert "; 1 step; kernels: " in lines[0] and "kernels kernels" not in lines[0], lines[0]
    assert plural(1.0, "minute") == "1 minute" and plural(0.5, "minute") == "0.5 minutes"
    assert plural(1200, "step") == "1,200 steps"


def test_the_closing_line_names_the_best_validation_where_best_holds_other_weights_than_last(tmp_path):
    def closing(val: float, best: float | None) -> str:
        lines: list[str] = []
        report(
            RunSummary(2019, "max_time", val, 100_001, 2_000_000, 520_051, 120.0, str(tmp_path), best),
            lines.append,
        )
        return lines[0]

    assert closing(1.1893, 1.1817) == (
        f"step 2019 (max time, 2.0 min): validation {1.1893 / math.log(2):.3f} bits/char (1.1893 nats) over "
        f"100,001 characters, best {1.1817 / math.log(2):.3f} (in best/: what sample and eval read); "
        "520,051 parameters"
    )
    assert "best" not in closing(1.1817, 1.1817) and "best" not in closing(1.1817, None)


# --------------------------------------------------------------------------- greedy loops
def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_recent_tokens_once():
    y = np.array([2.0, -1.0, 0.5, 3.0, -2.0])
    z = apply_repetition_penalty(y, [0, 1, 0, 1, 1], 2.0)
    np.testing.assert_array_equal(z, [1.0, -2.0, 0.5, 3.0, -2.0])
    np.testing.assert_array_equal(apply_repetition_penalty(y, [0, 1], 1.0), y)


def _greedy_reference(model, prime, n, penalty, window):
    """Greedy decoding recomputing the whole prefix each time, with the penalty written out by hand."""
    ctx = list(prime)
    for _ in range(n):
        y, _ = model.forward(np.array(ctx)[:, None])
        z = y[-1, 0].astype(np.float64).copy()
        for j in set(ctx[-window:]):
            z[j] = z[j] / penalty if z[j] > 0 else z[j] * penalty
        ctx.append(int(np.argmax(z)))
    return ctx[len(prime) :]


@pytest.mark.parametrize("penalty, window", [(1.0, 4), (1.7, 4), (3.0, 2)])
def test_greedy_generation_with_a_repetition_penalty_matches_the_written_out_rule(penalty, window):
    model = tiny_model(7, seed=5)
    model.eval()
    prime = [1, 2, 3]
    got = list(
        generate(model, prime, 25, temperature=0, repetition_penalty=penalty, repetition_window=window)
    )
    assert got == _greedy_reference(model, prime, 25, penalty, window)


def test_the_penalty_changes_a_greedy_loop_and_no_penalty_leaves_greedy_unchanged():
    model = tiny_model(7, seed=5)
    plain = list(generate(model, [1, 2, 3], 60, temperature=0))
    assert plain == _greedy_reference(model, [1, 2, 3], 60, 1.0, 1)
    assert list(generate(model, [1, 2, 3], 60, temperature=0, repetition_penalty=3.0)) != plain


def test_repeating_period_finds_the_loop_at_the_end():
    assert repeating_period(list("xyz" + "ab" * 40)) == 2
    assert repeating_period(list(" " * 50)) == 1
    assert repeating_period(list(np.random.default_rng(0).integers(0, 20, 300))) is None


def test_sample_notes_a_greedy_loop_on_stderr(run):
    r = unrolled("sample", run, "--temperature", "0", "--length", "300")
    assert r.returncode == 0, r.stderr
    drawn = r.stdout[1:-1]  # after the default prime (a newline), before the closing newline
    notes = [line for line in r.stderr.splitlines() if line.startswith("note: ")]
    if repeating_period([ord(c) for c in drawn]) is None:
        assert notes == [], r.stderr
    else:
        assert len(notes) == 1 and "ended in a loop" in notes[0] and "--repetition-penalty 1.3" in notes[0]


def test_the_greedy_loop_note_names_the_loop_and_is_silent_when_sampling(capsys):
    from unrolled.apps.charlm import SampleConfig
    from unrolled.commands.sample import _note_a_greedy_loop

    _note_a_greedy_loop(SampleConfig(temperature=0), "def f(x):\n" + " the mat." * 20)
    assert capsys.readouterr().err == (
        "note: greedy decoding (--temperature 0) ended in a loop of 9 characters (' the mat.' repeated); "
        "try --repetition-penalty 1.3 or a --temperature above 0 (e.g. 0.5)\n"
    )
    _note_a_greedy_loop(SampleConfig(temperature=0.8), " the mat." * 20)
    _note_a_greedy_loop(SampleConfig(temperature=0), "no loop in this greedy text at all, none")
    assert capsys.readouterr().err == ""


def test_greedy_sample_is_unchanged_by_a_penalty_of_one(run):
    a = unrolled("sample", run, "--temperature", "0", "--length", "80")
    b = unrolled("sample", run, "--temperature", "0", "--length", "80", "--repetition-penalty", "1")
    assert a.stdout == b.stdout


def test_bad_penalty_is_one_line(run):
    r = unrolled("sample", run, "--repetition-penalty", "0.5")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "unrolled: error: --repetition-penalty: expected a number >= 1 (1 = off), got 0.5"
    ]


# --------------------------------------------------------------------------- learning-rate schedule
def test_cosine_schedule_decays_the_learning_rate_to_zero_at_the_last_step(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    cfg = CharLMConfig(
        layers=1, hidden=8, embed=4, seq_len=8, batch=2, steps=6, val_every=3, schedule="cosine"
    )
    fit(cfg, [tmp_path / "t.txt"], tmp_path / "run", log=lambda s: None)
    lrs = [json.loads(r)["lr"] for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [lr for lr in lrs if lr is not None]
    expected = [cfg.lr * 0.5 * (1 + math.cos(math.pi * s / 6)) for s in range(6)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    assert lrs[0] == cfg.lr and lrs[-1] < 0.07 * cfg.lr  # step 5 of 6: ½(1 + cos(5π/6)) = 0.067


def test_cosine_schedule_without_steps_is_refused_naming_the_options():
    with pytest.raises(ValueError, match=r"--schedule cosine: needs --steps"):
        CharLMConfig(steps=None, time=1.0, schedule="cosine")
    with pytest.raises(ValueError, match=r"--schedule"):
        CharLMConfig(schedule="linear")
