"""Vocabularies (statefulrnn.text.vocab) and the one tokeniser (statefulrnn.text.tokens)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statefulrnn.text.tokens import EOS, UNK, tokenize
from statefulrnn.text.vocab import UnknownTokenError, Vocab

POEM = "the cat sat\non the mat\n\nthe end\n"


def write(path, content):
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


# -------------------------------------------------------------------------------------- tokenising


def test_tokenize_names_the_tokens_encode_gives_ids_for():
    assert tokenize("ab\r\n🙂", "char") == ["a", "b", "\r", "\n", "🙂"]
    assert tokenize(POEM, "word") == ["the", "cat", "sat", EOS, "on", "the", "mat", EOS, EOS, "the", "end", EOS]
    assert tokenize("the  cat\tsat\r\non", "word") == ["the", "cat", "sat", EOS, "on"]
    assert tokenize("", "word") == [] and tokenize("", "char") == []
    with pytest.raises(ValueError, match="level"):
        tokenize("a", "byte")


@settings(max_examples=100, deadline=None)
@given(st.text(), st.sampled_from(["char", "word"]))
def test_tokenize_agrees_with_encode(text, level):
    v = Vocab.build(text + " a\n", level)
    ids, _ = v.encode(text)
    assert [v.id_of(t) if t in v else 0 for t in tokenize(text, level)] == ids.tolist()


# ------------------------------------------------------------------------------------- vocabulary


def test_char_vocab_orders_by_frequency_then_code_point():
    v = Vocab.build("abracadabra\n", "char")
    assert v.tokens == (UNK, "a", "b", "r", "\n", "c", "d")
    assert len(v) == 7 and v.level == "char" and v.boundary is None
    assert v.id_of("a") == 1 and v.id_of(UNK) == 0
    assert "c" in v and "z" not in v
    assert Vocab.build(["dcba", "abcd"], "char").tokens == (UNK, "a", "b", "c", "d")
    assert Vocab.build("zeta beta zeta alpha\n", "word").tokens == (UNK, EOS, "zeta", "alpha", "beta")


def test_char_encode_decode_round_trip():
    v = Vocab.build(POEM, "char")
    ids, unknown = v.encode(POEM)
    assert unknown == 0 and ids.dtype == np.uint8 and len(ids) == len(POEM)
    assert v.decode(ids) == POEM


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1))
def test_char_round_trip_on_any_text(text):
    v = Vocab.build(text, "char")
    ids, unknown = v.encode(text)
    assert unknown == 0
    assert v.decode(ids) == text
    assert len(v) == len(set(text)) + 1


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.lists(
            st.text(st.characters(blacklist_categories=("Z", "C")), min_size=1).filter(lambda w: w != EOS), max_size=5
        ),
        min_size=1,
    )
)
def test_word_round_trip_on_normalised_text(lines):
    """Single spaces between words and a line break after each line come back exactly (a literal
    "<eos>" word is the line-end token, as in pytorch/examples)."""
    text = "".join(" ".join(words) + "\n" for words in lines)
    v = Vocab.build(text, "word")
    ids, unknown = v.encode(text)
    assert unknown == 0
    assert v.decode(ids) == text
    assert int((ids == v.eos_id).sum()) == len(lines)


def test_word_level_eos_per_line_end():
    v = Vocab.build(POEM, "word")
    assert v.tokens[:2] == (UNK, EOS)
    ids, _ = v.encode(POEM)
    words = [v.tokens[i] for i in ids]
    assert words == ["the", "cat", "sat", EOS, "on", "the", "mat", EOS, EOS, "the", "end", EOS]
    assert v.decode(ids) == POEM
    # whitespace runs and CRLF line ends tokenise the same; only "\n" ends a line
    assert list(v.encode("the  cat\tsat\r\non the mat")[0]) == list(ids[:7])
    assert v.decode(v.encode("the cat")[0]) == "the cat"


def test_unknown_tokens_map_to_zero_and_are_counted():
    v = Vocab.build("abc", "char")
    ids, unknown = v.encode("abxxc")
    assert list(ids) == [v.id_of("a"), v.id_of("b"), 0, 0, v.id_of("c")]
    assert unknown == 2
    assert v.decode(ids) == "ab<unk><unk>c"
    w = Vocab.build("a b\n", "word")
    ids, unknown = w.encode("a zz b <unk> yy\n")
    assert list(ids) == [w.id_of("a"), 0, w.id_of("b"), 0, 0, w.eos_id]
    assert unknown == 2  # a literal "<unk>" word is the known token 0, not an unknown one


def test_min_count_and_max_size():
    text = "aaaabbbccd"
    assert Vocab.build(text, "char", min_count=2).tokens == (UNK, "a", "b", "c")
    assert Vocab.build(text, "char", max_size=3).tokens == (UNK, "a", "b")
    assert Vocab.build(text, "char", max_size=3).encode("abcd")[1] == 2
    with pytest.raises(ValueError, match="max_size"):
        Vocab.build(text, "word", max_size=1)
    with pytest.raises(ValueError, match="min_count"):
        Vocab.build(text, "char", min_count=0)


def test_dtype_is_the_smallest_that_holds_the_ids():
    def vocab(n):
        return Vocab("word", (UNK, EOS) + tuple(f"w{i}" for i in range(n - 2)))

    assert vocab(256).dtype == np.uint8
    assert vocab(257).dtype == np.uint16
    assert vocab(65536).dtype == np.uint16
    assert vocab(65537).dtype == np.uint32
    big = vocab(300)
    ids, _ = big.encode("w297 w0\n")
    assert ids.dtype == np.uint16 and list(ids) == [299, 2, 1]


def test_id_of_unknown_token_names_it():
    v = Vocab.build("abc", "char")
    with pytest.raises(UnknownTokenError, match="'z'"):
        v.id_of("z")
    with pytest.raises(KeyError):
        v.id_of("z")
    with pytest.raises(ValueError, match="not in the char-level vocabulary"):
        v.id_of("z")


def test_decode_rejects_out_of_range_ids():
    v = Vocab.build("abc", "char")
    with pytest.raises(ValueError, match="id 9 is outside"):
        v.decode([1, 9])
    with pytest.raises(ValueError, match="id -1 is outside"):
        v.decode(np.array([-1]))
    assert v.decode([]) == ""


def test_boundary_token():
    v = Vocab.build(["ab", "ba"], "char", boundary="<doc>")
    assert v.tokens[:2] == (UNK, "<doc>") and v.boundary_id == 1
    assert v.decode([1, 2]) == "<doc>a"
    assert Vocab.build("a b\n", "word", boundary="<doc>").tokens[:3] == (UNK, EOS, "<doc>")
    for bad in ("", "a", "<unk>", "<eos>", "a b"):
        with pytest.raises(ValueError, match="boundary"):
            Vocab.build("ab", "char", boundary=bad)


def test_invalid_vocabularies_are_rejected():
    with pytest.raises(ValueError, match="level"):
        Vocab.build("a", "byte")
    with pytest.raises(ValueError, match="token 0"):
        Vocab("char", ("a", UNK))
    with pytest.raises(ValueError, match="twice"):
        Vocab("char", (UNK, "a", "a"))
    with pytest.raises(ValueError, match="single characters"):
        Vocab("char", (UNK, "ab"))
    with pytest.raises(ValueError, match="<eos>"):
        Vocab("word", (UNK, "a"))


def test_json_and_file_round_trip(tmp_path):
    v = Vocab.build(["héllo wörld 🙂\n", "tab\there\n"], "word", boundary="<doc>")
    assert Vocab.from_json(v.to_json()) == v
    assert Vocab.from_dict(json.loads(json.dumps(v.to_dict()))) == v
    v.save(tmp_path / "vocab.json")
    loaded = Vocab.load(tmp_path / "vocab.json")
    assert loaded == v and loaded.tokens == v.tokens and loaded.boundary == "<doc>"
    c = Vocab.build("\r\n\x00\u2028\udc80", "char")
    c.save(tmp_path / "c.json")
    assert Vocab.load(tmp_path / "c.json") == c
    assert repr(c) == "Vocab(level='char', size=6)"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"format": "statefulrnn-vocab", "version": 1, "level": "char", "tok', "invalid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "expected an object"),
        (b'{"model": "gpt2"}', "not a statefulrnn vocabulary"),
        (b'{"format": "statefulrnn-vocab", "version": 1, "level": "char"}', "missing the field 'tokens'"),
        (b'{"format": "statefulrnn-vocab", "version": 7, "level": "char", "tokens": ["<unk>"]}', "upgrade"),
        (b'{"format": "statefulrnn-vocab", "version": 1, "level": "char", "tokens": "abc"}', "list of strings"),
        (b'{"format": "statefulrnn-vocab", "version": 1, "level": "char", "tokens": ["a"]}', "token 0"),
    ],
)
def test_load_rejects_corrupt_or_foreign_files(tmp_path, content, message):
    path = write(tmp_path / "vocab.json", content)
    with pytest.raises(ValueError, match=message) as e:
        Vocab.load(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
