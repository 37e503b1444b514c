"""Corpora in memory and prepared, memory-mapped ones (statefulrnn.text.corpus, .prepare, .pipeline)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from statefulrnn.layout import ConcatLayout, Sequences
from statefulrnn.text import pipeline, tokens
from statefulrnn.text.corpus import Corpus, load_corpus, text_corpus
from statefulrnn.text.prepare import prepare_text
from statefulrnn.text.tokens import EOS, UNK
from statefulrnn.text.vocab import Vocab

POEM = "the cat sat\non the mat\n\nthe end\n"


def write(path, content):
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def test_prepare_and_memmap_match_in_memory_encoding(tmp_path):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20
    src = write(tmp_path / "input.txt", text)
    summary = prepare_text([src], tmp_path / "prep")
    corpus = load_corpus(tmp_path / "prep")
    vocab = Vocab.build(text, "char")
    ids, _ = vocab.encode(text)
    assert isinstance(corpus.tokens, np.memmap) and not corpus.tokens.flags.writeable
    assert corpus.tokens.dtype == np.uint8
    assert corpus.vocab == vocab
    np.testing.assert_array_equal(corpus.tokens, ids)
    assert list(corpus.starts) == [0, len(text)] and corpus.documents == ("input.txt",)
    assert summary["train_tokens"] == len(text) and summary["vocab_size"] == len(vocab)
    assert summary["val_tokens"] is None and summary["dtype"] == "uint8"
    manifest = json.loads((tmp_path / "prep" / "corpus.json").read_text())
    assert manifest["format"] == "statefulrnn-text-corpus" and manifest["version"] == 1
    (source,) = manifest["sources"]
    assert source["bytes"] == len(text) and len(source["sha256"]) == 64 and source["tokens"] == len(text)
    assert sorted(p.name for p in (tmp_path / "prep").iterdir()) == ["corpus.json", "train.bin", "vocab.json"]
    mem, none = text_corpus(src)
    assert none is None
    np.testing.assert_array_equal(mem.tokens, corpus.tokens)


def test_multi_document_starts_and_boundary(tmp_path):
    a = write(tmp_path / "a.txt", "aaab")
    b = write(tmp_path / "b.txt", "bc")
    c = write(tmp_path / "c.txt", "ccccc")
    prepare_text([a, b, c], tmp_path / "plain")
    plain = load_corpus(tmp_path / "plain")
    assert list(plain.starts) == [0, 4, 6, 11]
    assert plain.documents == ("a.txt", "b.txt", "c.txt")
    assert [plain.vocab.decode(plain.tokens[s:e]) for s, e in zip(plain.starts, plain.starts[1:])] == [
        "aaab",
        "bc",
        "ccccc",
    ]
    prepare_text([a, b, c], tmp_path / "doc", boundary="<doc>")
    doc = load_corpus(tmp_path / "doc")
    assert list(doc.starts) == [0, 4, 7, 13]
    assert doc.vocab.decode(doc.tokens) == "aaab<doc>bc<doc>ccccc"
    assert doc.tokens[4] == doc.vocab.boundary_id and doc.tokens[7] == doc.vocab.boundary_id
    seqs = doc.to_sequences()
    assert isinstance(seqs, Sequences) and seqs.count == 3
    mem, _ = text_corpus([a, b, c], boundary="<doc>")
    np.testing.assert_array_equal(mem.tokens, doc.tokens)
    np.testing.assert_array_equal(mem.starts, doc.starts)


def test_word_level_prepared_corpus(tmp_path):
    a = write(tmp_path / "a.txt", POEM)
    b = write(tmp_path / "b.txt", "the cat\nran")
    summary = prepare_text([a, b], tmp_path / "w", level="word")
    corpus = load_corpus(tmp_path / "w")
    assert corpus.vocab.level == "word" and corpus.vocab.tokens[:2] == (UNK, EOS)
    assert summary["train_tokens"] == 12 + 4
    assert list(corpus.starts) == [0, 12, 16]
    assert corpus.vocab.decode(corpus.tokens) == POEM + "the cat\nran"


def test_val_fraction_split_sizes(tmp_path):
    src = write(tmp_path / "t.txt", "abcdefghij" * 10)
    train, val = text_corpus(src, val_fraction=0.1)
    assert (len(train), len(val)) == (90, 10)
    assert list(train.starts) == [0, 90] and list(val.starts) == [0, 10]
    assert train.vocab.decode(val.tokens) == "abcdefghij"
    summary = prepare_text([src], tmp_path / "p", val_fraction=0.25)
    assert (summary["train_tokens"], summary["val_tokens"]) == (75, 25)
    ptrain, pval = load_corpus(tmp_path / "p"), load_corpus(tmp_path / "p", "val")
    assert (len(ptrain), len(pval)) == (75, 25)
    assert ptrain.vocab.decode(ptrain.tokens) + pval.vocab.decode(pval.tokens) == "abcdefghij" * 10
    with pytest.raises(ValueError, match="training split empty"):
        text_corpus(write(tmp_path / "tiny.txt", "a"), val_fraction=0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        text_corpus(src, val_fraction=1.5)


def test_val_fraction_across_documents_and_vocab_from_training_part_only(tmp_path):
    a = write(tmp_path / "a.txt", "aaaaaaaa")  # 8 tokens
    b = write(tmp_path / "b.txt", "abbbbbbbxy")  # 10 tokens: x, y only in the last 20% of the 18
    train, val = text_corpus([a, b], val_fraction=0.2)
    assert (len(train), len(val)) == (14, 4)
    assert "x" not in train.vocab and "y" not in train.vocab
    assert list(train.starts) == [0, 8, 14] and list(val.starts) == [0, 4]
    assert train.documents == ("a.txt", "b.txt") and val.documents == ("b.txt",)
    assert val.n_unknown == 2 and train.n_unknown == 0
    prepare_text([a, b], tmp_path / "p", val_fraction=0.2)
    ptrain, pval = load_corpus(tmp_path / "p"), load_corpus(tmp_path / "p", "val")
    assert ptrain.vocab == train.vocab and pval.n_unknown == 2
    np.testing.assert_array_equal(pval.tokens, val.tokens)
    np.testing.assert_array_equal(pval.starts, val.starts)
    # a split that falls exactly on a document start
    train, val = text_corpus([a, b], val_fraction=10 / 18)
    assert list(train.starts) == [0, 8] and list(val.starts) == [0, 10] and val.documents == ("b.txt",)
    prepare_text([a, b], tmp_path / "q", val_fraction=10 / 18)
    assert list(load_corpus(tmp_path / "q").starts) == [0, 8]


def test_val_file_unknown_tokens_are_counted(tmp_path):
    src = write(tmp_path / "train.txt", "hello world\n")
    val_path = write(tmp_path / "val.txt", "hello there world\nzap\n")
    train, val = text_corpus(src, level="word", val=val_path)
    assert val.n_unknown == 2 and train.n_unknown == 0
    assert "unknown" in val.summary() and "2 unknown" in val.summary()
    summary = prepare_text([src], tmp_path / "p", level="word", val=val_path)
    assert summary["val_unknown"] == 2
    assert load_corpus(tmp_path / "p", "val").n_unknown == 2
    with pytest.raises(ValueError, match="not both"):
        text_corpus(src, val=val_path, val_fraction=0.1)
    with pytest.raises(ValueError, match="both a training and a validation file"):
        prepare_text([src], tmp_path / "q", val=src)


def test_given_vocab_is_used(tmp_path):
    src = write(tmp_path / "t.txt", "abcabc")
    vocab = Vocab.build("cba!", "char")
    vocab.save(tmp_path / "v.json")
    for v in (vocab, tmp_path / "v.json"):
        corpus, _ = text_corpus(src, vocab=v)
        assert corpus.vocab == vocab
        np.testing.assert_array_equal(corpus.tokens, vocab.encode("abcabc")[0])
    with pytest.raises(ValueError, match="level"):
        text_corpus(src, vocab=vocab, level="word")
    with pytest.raises(ValueError, match="min_count"):
        text_corpus(src, vocab=vocab, min_count=2)


def test_streaming_in_small_chunks_gives_the_same_ids(tmp_path, monkeypatch):
    text = "héllo wörld 🙂\n  two  words\r\n" * 7 + "Σ" * 40 + " tail end"
    src = write(tmp_path / "u.txt", "\ufeff" + text)
    for level in ("char", "word"):
        whole = Vocab.build(text, level)
        assert text_corpus(src, level=level)[0].vocab == whole
        ref_train, ref_val = text_corpus(src, level=level, val_fraction=0.3)
        expected = [t if t in ref_train.vocab else UNK for t in map(whole.tokens.__getitem__, whole.encode(text)[0])]
        got = [ref_train.vocab.tokens[i] for i in np.concatenate([ref_train.tokens, ref_val.tokens])]
        assert got == expected and len(ref_train) == int(len(expected) * 0.7)
        for chunk in (1, 3, 7):
            monkeypatch.setattr(pipeline, "_CHUNK_BYTES", chunk)
            monkeypatch.setattr(tokens, "_CHUNK_CHARS", chunk)
            out = tmp_path / f"{level}{chunk}"
            prepare_text([src], out, level=level, val_fraction=0.3)
            for split, ref in (("train", ref_train), ("val", ref_val)):
                corpus = load_corpus(out, split)
                assert corpus.vocab == ref.vocab and corpus.n_unknown == ref.n_unknown
                np.testing.assert_array_equal(corpus.tokens, ref.tokens)
            mem_train, mem_val = text_corpus(src, level=level, val_fraction=0.3)
            np.testing.assert_array_equal(mem_train.tokens, ref_train.tokens)
            np.testing.assert_array_equal(mem_val.tokens, ref_val.tokens)
        monkeypatch.undo()


def test_prepare_reports_invalid_utf8_and_replacements(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "_CHUNK_BYTES", 4)
    src = write(tmp_path / "bad.txt", b"abc\ndefg\xe2\x82hij")
    with pytest.raises(ValueError, match=r"byte offset 8 \(line 2"):
        prepare_text([src], tmp_path / "p")
    assert not (tmp_path / "p" / "corpus.json").exists()
    summary = prepare_text([src], tmp_path / "p", replace_invalid=True)
    assert summary["replaced_invalid"] == 1
    corpus = load_corpus(tmp_path / "p")
    assert corpus.vocab.decode(corpus.tokens) == "abc\ndefg\ufffdhij"
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["corpus.json", "train.bin", "vocab.json"]


def test_prepare_input_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        prepare_text([tmp_path / "missing.txt"], tmp_path / "p")
    with pytest.raises(IsADirectoryError):
        prepare_text([tmp_path], tmp_path / "p")
    with pytest.raises(ValueError, match="is empty"):
        prepare_text([write(tmp_path / "e.txt", b"")], tmp_path / "p")
    with pytest.raises(ValueError, match="no words"):
        prepare_text([write(tmp_path / "ws.txt", "   ")], tmp_path / "p", level="word")
    with pytest.raises(ValueError, match="not a directory"):
        prepare_text([write(tmp_path / "ok.txt", "ok")], tmp_path / "ok.txt")
    assert not (tmp_path / "p").exists() or not (tmp_path / "p" / "corpus.json").exists()


def test_reprepare_replaces_stale_files(tmp_path):
    src = write(tmp_path / "t.txt", "abcdefghij")
    prepare_text([src], tmp_path / "p", val_fraction=0.5)
    assert (tmp_path / "p" / "val.bin").exists()
    prepare_text([src], tmp_path / "p")
    assert not (tmp_path / "p" / "val.bin").exists()
    assert len(load_corpus(tmp_path / "p")) == 10
    with pytest.raises(ValueError, match="no 'val' split"):
        load_corpus(tmp_path / "p", "val")


@pytest.fixture
def prepared(tmp_path):
    src = write(tmp_path / "t.txt", "hello world, hello corpus\n" * 10)
    prepare_text([src], tmp_path / "p", val_fraction=0.1)
    return tmp_path / "p"


def test_truncated_bin_is_a_clear_error(prepared):
    data = (prepared / "train.bin").read_bytes()
    (prepared / "train.bin").write_bytes(data[:-3])
    with pytest.raises(ValueError, match="truncated or corrupt") as e:
        load_corpus(prepared)
    assert "train.bin" in str(e.value) and "\n" not in str(e.value)
    load_corpus(prepared, "val")


def test_missing_files_are_clear_errors(prepared, tmp_path):
    (prepared / "val.bin").unlink()
    with pytest.raises(ValueError, match="val.bin is missing"):
        load_corpus(prepared, "val")
    (prepared / "vocab.json").unlink()
    with pytest.raises(ValueError, match="vocab.json is missing"):
        load_corpus(prepared)
    (prepared / "corpus.json").unlink()
    with pytest.raises(ValueError, match="not a prepared text corpus"):
        load_corpus(prepared)
    with pytest.raises(FileNotFoundError):
        load_corpus(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="is a file, not a prepared corpus"):
        load_corpus(tmp_path / "t.txt")


def test_corrupt_vocab_is_a_clear_error(prepared):
    (prepared / "vocab.json").write_text('{"format": "statefulrnn-vocab", "version": 1, "lev')
    with pytest.raises(ValueError, match="vocab.json: not a statefulrnn vocabulary"):
        load_corpus(prepared)


def test_mismatched_vocab_is_a_clear_error(prepared):
    Vocab.build("xyz", "char").save(prepared / "vocab.json")
    with pytest.raises(ValueError, match="does not belong to this corpus"):
        load_corpus(prepared)


def test_unknown_version_and_corrupt_manifest(prepared):
    path = prepared / "corpus.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(ValueError, match="version 99 is newer"):
        load_corpus(prepared)
    path.write_text(json.dumps({**manifest, "format": "something-else"}))
    with pytest.raises(ValueError, match="not a statefulrnn text corpus"):
        load_corpus(prepared)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="corrupt corpus description"):
        load_corpus(prepared)
    bad_starts = json.loads(json.dumps(manifest))
    bad_starts["splits"]["train"]["doc_starts"] = [5]
    path.write_text(json.dumps(bad_starts))
    with pytest.raises(ValueError, match="invalid document starts"):
        load_corpus(prepared)


def test_verify_finds_ids_outside_the_vocabulary(prepared):
    train = load_corpus(prepared, verify=True)
    data = bytearray((prepared / "train.bin").read_bytes())
    data[5] = 250
    (prepared / "train.bin").write_bytes(bytes(data))
    assert len(load_corpus(prepared)) == len(train)
    with pytest.raises(ValueError, match="holds id 250"):
        load_corpus(prepared, verify=True)


def test_text_corpus_on_a_prepared_directory(prepared):
    train, val = text_corpus(prepared)
    assert isinstance(train, Corpus) and isinstance(train.tokens, np.memmap) and len(val) > 0
    assert text_corpus(prepared, level="char", vocab=train.vocab)[0].vocab == train.vocab
    with pytest.raises(ValueError, match="its val_fraction cannot change"):
        text_corpus(prepared, val_fraction=0.2)
    with pytest.raises(ValueError, match="prepared at char level"):
        text_corpus(prepared, level="word")
    with pytest.raises(ValueError, match="different vocabulary"):
        text_corpus(prepared, vocab=Vocab.build("abc", "char"))
    with pytest.raises(ValueError, match="not a prepared text corpus"):
        text_corpus(prepared.parent)


def test_val_fraction_splits_a_prepared_directory_without_val(tmp_path):
    a = write(tmp_path / "a.txt", "aaaaaaaa")
    b = write(tmp_path / "b.txt", "abbbbbbbxy")
    prepare_text([a, b], tmp_path / "p")
    whole, none = text_corpus(tmp_path / "p")
    assert none is None and len(whole) == 18
    train, val = text_corpus(tmp_path / "p", val_fraction=0.2)
    assert isinstance(train.tokens, np.memmap) and (len(train), len(val)) == (14, 4)
    assert list(train.starts) == [0, 8, 14] and list(val.starts) == [0, 4]
    assert train.documents == ("a.txt", "b.txt") and val.documents == ("b.txt",)
    assert train.vocab.decode(val.tokens) == "bbxy" and val.n_unknown == 0
    train, val = text_corpus(tmp_path / "p", val_fraction=10 / 18)
    assert list(train.starts) == [0, 8] and list(val.starts) == [0, 10] and val.documents == ("b.txt",)


def test_corpus_feeds_a_concat_layout(prepared):
    corpus = load_corpus(prepared)
    layout = ConcatLayout(corpus.to_sequences(), lanes=2, window=8)
    batch = layout.batch(0)
    half = layout.lane_length
    assert corpus.vocab.decode(batch.inputs[0]) == corpus.vocab.decode(corpus.tokens[:8])
    assert corpus.vocab.decode(batch.inputs[1]) == corpus.vocab.decode(corpus.tokens[half : half + 8])
    np.testing.assert_array_equal(batch.targets[0], corpus.tokens[1:9])
