"""Text handling for the character-level model: vocabulary, streaming UTF-8, refusals, memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from unrolled.apps.charlm.text import (
    TextError,
    Vocabulary,
    check_trainable,
    encode_texts,
    iter_text,
    scan_texts,
    split_validation,
)

MIXED = "héllo wörld — ☃ naïve 𝄞 clef\nsecond line: ünïcödé\n" * 7


def test_vocabulary_is_sorted_by_code_point_and_roundtrips_text():
    v = Vocabulary.from_chars("banana!")
    assert v.chars == ("!", "a", "b", "n")
    ids = v.encode("banana!")
    assert ids.dtype == np.uint8 and ids.tolist() == [2, 1, 3, 1, 3, 1, 0]
    assert v.decode(ids) == "banana!"
    assert Vocabulary.from_json(v.to_json()) == v


def test_vocabulary_names_an_unknown_character_and_its_position():
    v = Vocabulary.from_chars("abc")
    with pytest.raises(TextError, match=r"'z' \(U\+007A\) at character 3 .*vocabulary of 3"):
        v.encode("abcz")


def test_vocabulary_uses_the_smallest_id_type():
    assert Vocabulary.from_chars(map(chr, range(256))).dtype == np.uint8
    assert Vocabulary.from_chars(map(chr, range(257))).dtype == np.uint16


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 64])
def test_streaming_decodes_characters_split_across_chunks(tmp_path, chunk_bytes):
    p = tmp_path / "t.txt"
    p.write_text(MIXED, encoding="utf-8")
    assert "".join(iter_text(p, chunk_bytes)) == MIXED
    stats = scan_texts([p], chunk_bytes)
    assert stats.lengths == (len(MIXED),) and stats.chars == frozenset(MIXED)
    vocab = Vocabulary.from_chars(stats.chars)
    ids = encode_texts([p], vocab, stats.lengths, chunk_bytes)
    assert vocab.decode(ids) == MIXED


def test_several_files_are_concatenated_in_order(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("abc", encoding="utf-8")
    b.write_text("cba!", encoding="utf-8")
    stats = scan_texts([a, b])
    vocab = Vocabulary.from_chars(stats.chars)
    assert stats.lengths == (3, 4)
    assert vocab.decode(encode_texts([a, b], vocab)) == "abccba!"


def test_byte_order_mark_is_dropped(tmp_path):
    p = tmp_path / "bom.txt"
    p.write_bytes(b"\xef\xbb\xbfab")
    assert "".join(iter_text(p)) == "ab"


@pytest.mark.parametrize("chunk_bytes", [1, 4, 1 << 20])
def test_non_utf8_is_refused_with_the_byte_offset(tmp_path, chunk_bytes):
    p = tmp_path / "latin1.txt"
    p.write_bytes(b"caf" + "é au lait".encode("latin-1"))
    with pytest.raises(TextError, match=r"not UTF-8 .*byte 0xe9 at byte offset 3\b"):
        scan_texts([p], chunk_bytes)


def test_missing_file_and_directory_are_refused(tmp_path):
    with pytest.raises(TextError, match="no such file"):
        scan_texts([tmp_path / "nope.txt"])
    with pytest.raises(TextError, match="is a directory"):
        scan_texts([tmp_path])


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "is empty"), ("x", "only one character"), ("aaaa", "every character is 'a'")],
)
def test_texts_a_model_cannot_learn_from_are_refused(tmp_path, content, message):
    p = tmp_path / "t.txt"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(TextError, match=message):
        check_trainable(scan_texts([p]), [p])


def test_validation_is_the_tail_and_a_view():
    ids = np.arange(100, dtype=np.uint8)
    train, val = split_validation(ids, 0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))
    assert np.shares_memory(train, ids) and np.shares_memory(val, ids)
    with pytest.raises(TextError, match="too few"):
        split_validation(ids[:3], 0.1)


def test_encoding_a_big_file_needs_about_one_byte_per_character(tmp_path):
    n = 4_000_000
    p = tmp_path / "big.txt"
    rng = np.random.default_rng(0)
    p.write_bytes(rng.choice(np.frombuffer(b"abcdefgh \n", np.uint8), n).tobytes())
    chunk = 1 << 18
    tracemalloc.start()
    try:
        stats = scan_texts([p], chunk)
        ids = encode_texts([p], Vocabulary.from_chars(stats.chars), stats.lengths, chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ids.shape == (n,) and ids.dtype == np.uint8
    # The ids themselves (n bytes) plus a few chunks of working memory; never a copy of the whole text.
    assert peak < n + 30 * chunk, f"peak {peak / 1e6:.1f} MB for a {n / 1e6:.0f} MB text"
