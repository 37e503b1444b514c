"""Text as token ids: vocabularies, strict UTF-8 reading, and compact memory-mapped token files.

A text is tokenised at one of two levels:

- `char`: every Unicode character is a token (line breaks and carriage returns included).
- `word`: the text is split on whitespace and every line break becomes an `<eos>` token, as in
  pytorch/examples' word_language_model (identical for files that end with a line break).

Id 0 is always `<unk>`, the id of every token the vocabulary lacks; encoding counts them. Several
input files are several documents; an optional boundary token (e.g. `<doc>`) begins every document
after the first. `prepare_text` writes a corpus once as raw ids in the smallest unsigned dtype
(`train.bin`, `val.bin`) with `vocab.json` and `corpus.json`; `load_corpus` memory-maps it, so a
corpus larger than memory can be trained on. `text_corpus` takes a raw text file (tokenised in
memory) or a prepared directory alike.

Only numpy here.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .layout import Sequences
from .vocab import (
    EOS,
    UNK,
    UnknownTokenError,
    Vocab,
    _check_boundary,
    _check_level,
    _Counts,
    _pieces,
    _slices,
    _tokenize,
    _write_atomic,
)

CORPUS_FORMAT = "statefulrnn-text-corpus"
CORPUS_VERSION = 1
CORPUS_FILE = "corpus.json"
VOCAB_FILE = "vocab.json"
SPLITS = ("train", "val")

PathLike = str | os.PathLike

_CHUNK_BYTES = 4 << 20  # read size when streaming a file
_DTYPES = {"uint8": np.dtype("<u1"), "uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}


# ----------------------------------------------------------------------------------------- reading


def _invalid_utf8(source: str, data: bytes, pos: int, err: UnicodeDecodeError, base: int, lines: int) -> ValueError:
    at = pos + err.start
    line = lines + data.count(b"\n", 0, at) + 1
    return ValueError(
        f"{source}: invalid UTF-8 at byte offset {base + at} (line {line}, byte 0x{data[at]:02x}: {err.reason}); "
        "convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8), or pass replace_invalid=True "
        "(CLI: --replace-invalid) to replace invalid bytes with U+FFFD"
    )


def _decode(
    data: bytes, *, final: bool, source: str, replace: bool, base: int = 0, lines: int = 0
) -> tuple[str, int, int]:
    """Decode UTF-8 `data`: (text, bytes consumed, invalid sequences replaced).

    Unless `final`, an incomplete sequence at the end is left unconsumed. Replacement follows
    Python's errors="replace" exactly (one U+FFFD per maximal invalid subsequence).
    """
    view = memoryview(data)
    parts: list[str] = []
    pos = replaced = 0
    while True:
        try:
            text, used = codecs.utf_8_decode(view[pos:], "strict", final)
        except UnicodeDecodeError as e:
            if not replace:
                raise _invalid_utf8(source, data, pos, e, base, lines) from None
            parts.append(codecs.utf_8_decode(view[pos : pos + e.start], "strict", True)[0])
            parts.append("\ufffd")
            replaced += 1
            pos += e.end
            continue
        parts.append(text)
        return "".join(parts), pos + used, replaced


def decode_utf8(data: bytes, *, source: str = "<bytes>", replace_invalid: bool = False) -> tuple[str, int]:
    """Decode UTF-8 bytes strictly, as `read_text` does: (text, number of invalid sequences replaced).

    A leading byte-order mark is dropped. Invalid bytes raise ValueError naming `source` and the
    byte offset, unless `replace_invalid`, which turns each invalid sequence into U+FFFD.
    """
    text, _, replaced = _decode(bytes(data), final=True, source=source, replace=replace_invalid)
    return text.removeprefix("\ufeff"), replaced


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    if path.is_dir():
        raise IsADirectoryError(21, "Is a directory (give a text file)", str(path))


def read_text(path: PathLike, *, replace_invalid: bool = False) -> str:
    """The text of a UTF-8 file, read strictly so that a wrong encoding cannot pass unnoticed.

    Invalid UTF-8 raises ValueError naming the file, the byte offset and line of the first invalid
    byte, and the fix; with `replace_invalid=True` each invalid sequence becomes U+FFFD (use
    `decode_utf8` to also get their count). A leading byte-order mark is dropped. An empty file
    raises ValueError; a missing file FileNotFoundError; a directory IsADirectoryError.
    """
    path = Path(path)
    data = path.read_bytes()
    if not data:
        raise ValueError(f"{path} is empty")
    return decode_utf8(data, source=str(path), replace_invalid=replace_invalid)[0]


@dataclass
class _Doc:
    """One document: a file (streamed in chunks) or a text in memory; stats filled as it is read."""

    name: str
    path: Path | None = None
    text: str | None = None
    size: int = 0
    sha256: str = ""
    replaced: int = 0
    tokens: int = 0
    piece_lengths: list[int] = field(default_factory=list)

    @classmethod
    def of_file(cls, path: Path, replace_invalid: bool) -> _Doc:
        """The file read into memory (for `text_corpus`)."""
        data = path.read_bytes()
        if not data:
            raise ValueError(f"{path} is empty")
        text, replaced = decode_utf8(data, source=str(path), replace_invalid=replace_invalid)
        return cls(path.name, path, text, len(data), hashlib.sha256(data).hexdigest(), replaced)

    def chunks(self, replace_invalid: bool) -> Iterator[str]:
        if self.text is not None:
            yield from _slices(self.text)
        else:
            yield from self._stream(replace_invalid)

    def _stream(self, replace_invalid: bool) -> Iterator[str]:
        sha = hashlib.sha256()
        size = replaced = lines = 0
        pending = b""
        first = True
        with open(self.path, "rb") as f:
            while True:
                block = f.read(_CHUNK_BYTES)
                final = not block
                data = pending + block
                base = size - len(pending)
                sha.update(block)
                size += len(block)
                if not data:
                    break
                text, used, n = _decode(
                    data, final=final, source=str(self.path), replace=replace_invalid, base=base, lines=lines
                )
                replaced += n
                lines += data.count(b"\n", 0, used)
                pending = data[used:]
                if first and text:
                    text = text.removeprefix("\ufeff")
                    first = False
                if text:
                    yield text
                if final:
                    break
        if size == 0:
            raise ValueError(f"{self.path} is empty")
        self.size, self.sha256, self.replaced = size, sha.hexdigest(), replaced


# ------------------------------------------------------------------------------------- the pipeline


class _MemorySink:
    def __init__(self, dtype: np.dtype) -> None:
        self.dtype, self.parts, self.n = dtype, [], 0

    def write(self, ids: np.ndarray) -> None:
        if len(ids):
            self.parts.append(ids)
            self.n += len(ids)

    def array(self) -> np.ndarray:
        out = np.concatenate(self.parts).astype(self.dtype, copy=False) if self.parts else np.zeros(0, self.dtype)
        out.flags.writeable = False
        return out


class _FileSink:
    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self.path, self.dtype, self.n = path, dtype.newbyteorder("<"), 0
        self.file = open(path, "wb")

    def write(self, ids: np.ndarray) -> None:
        if len(ids):
            self.file.write(np.ascontiguousarray(ids, dtype=self.dtype).data)
            self.n += len(ids)


@dataclass
class _SplitData:
    sink: Any
    starts: list[int] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)
    n_unknown: int = 0

    def begin(self, at: int, source: int) -> None:
        self.starts.append(at)
        self.sources.append(source)

    def write(self, ids: np.ndarray, unknown: np.ndarray | None, source: int) -> None:
        if not len(ids):
            return
        if not self.starts:
            self.begin(0, source)
        self.sink.write(ids)
        if unknown is not None:
            self.n_unknown += int(unknown.sum())


def _stream(
    docs: Sequence[_Doc], level: str, replace_invalid: bool, boundary: bool
) -> Iterator[tuple[int, np.ndarray | list[str] | None]]:
    """(document index, tokens) pieces of `docs`; None stands for the boundary token."""
    for d in range(len(docs)):
        doc = docs[d]
        if boundary and d:
            yield d, None
        n = 0
        doc.piece_lengths = []
        for piece in _pieces(doc.chunks(replace_invalid), level):
            tokens = _tokenize(piece, level)
            doc.piece_lengths.append(len(tokens))
            if len(tokens):
                n += len(tokens)
                yield d, tokens
        if n == 0:
            what = "contains no text" if level == "char" else "has no words (only whitespace)"
            raise ValueError(f"{doc.path or doc.name} {what}")
        doc.tokens = n


def _encode(
    docs: Sequence[_Doc],
    vocab: Vocab,
    replace_invalid: bool,
    split: _SplitData,
    rest: _SplitData | None = None,
    cut: int | None = None,
) -> None:
    """Encode `docs` into `split`; from stream position `cut` on, into `rest`."""
    boundary_ids = np.array([vocab.boundary_id or 0], dtype=vocab.dtype)
    pos, current = 0, -1
    for d, tokens in _stream(docs, vocab.level, replace_invalid, vocab.boundary is not None):
        if tokens is None:
            ids, unknown = boundary_ids, None
        else:
            ids, unknown = vocab._encode_tokens(tokens)
        if d != current:
            current = d
            if cut is None or pos < cut:
                split.begin(pos, d)
            else:
                rest.begin(pos - cut, d)
        k = len(ids) if cut is None else min(max(cut - pos, 0), len(ids))
        split.write(ids[:k], None if unknown is None else unknown[:k], d)
        if k < len(ids):
            rest.write(ids[k:], None if unknown is None else unknown[k:], d)
        pos += len(ids)


def _as_paths(paths: PathLike | Sequence[PathLike] | None, what: str) -> list[Path]:
    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    out = [Path(p) for p in paths]
    if not out:
        raise ValueError(f"no {what} given")
    return out


def _check_fraction(val_fraction: float | None, val: list[Path]) -> None:
    if val_fraction is None:
        return
    if val:
        raise ValueError("give either a validation file (val) or val_fraction, not both")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be a number between 0 and 1 (exclusive), got {val_fraction!r}")


def _run(
    train_docs: list[_Doc],
    val_docs: list[_Doc],
    *,
    level: str,
    val_fraction: float | None,
    vocab: Vocab | None,
    boundary: str | None,
    min_count: int,
    max_size: int | None,
    replace_invalid: bool,
    make_sink: Any,
) -> tuple[Vocab, dict[str, _SplitData]]:
    """Count (if needed), build the vocabulary from the training part only, and encode every split."""
    has_boundary = (vocab.boundary if vocab is not None else boundary) is not None
    cut = None
    if vocab is None or val_fraction is not None:
        counts = _Counts(level) if vocab is None else None
        total = 0
        for _, tokens in _stream(train_docs, level, replace_invalid, has_boundary):
            total += 1 if tokens is None else len(tokens)
            if counts is not None and tokens is not None:
                counts.add(tokens)
        if val_fraction is not None:
            cut = int(total * (1 - val_fraction))
            if not 0 < cut < total:
                part = "training" if cut <= 0 else "validation"
                raise ValueError(
                    f"val_fraction={val_fraction} of {total:,} tokens leaves the {part} split empty: "
                    "use more text or another val_fraction"
                )
            if counts is not None:
                starts = np.cumsum([0] + [doc.tokens + (has_boundary and d > 0) for d, doc in enumerate(train_docs)])
                first = int(np.searchsorted(starts, cut, side="right")) - 1
                pos = int(starts[first])
                for d in range(first, len(train_docs)):
                    doc = train_docs[d]
                    if has_boundary and d > 0:
                        pos += 1
                    lengths = doc.piece_lengths
                    for piece, n in zip(_pieces(doc.chunks(replace_invalid), level), lengths):
                        if pos + n > cut:
                            counts.add(_tokenize(piece, level)[max(cut - pos, 0) :], sign=-1)
                        pos += n
        if vocab is None:
            vocab = Vocab._from_counts(
                level, counts.as_dict(), min_count=min_count, max_size=max_size, boundary=boundary
            )
    splits = {"train": _SplitData(make_sink("train", vocab.dtype))}
    if val_fraction is not None or val_docs:
        splits["val"] = _SplitData(make_sink("val", vocab.dtype))
    _encode(train_docs, vocab, replace_invalid, splits["train"], splits.get("val"), cut)
    if val_docs:
        _encode(val_docs, vocab, replace_invalid, splits["val"])
    return vocab, splits


def _resolve_vocab(
    vocab: Vocab | PathLike | None, level: str | None, boundary: str | None, min_count: int, max_size: int | None
) -> tuple[Vocab | None, str]:
    if vocab is not None and not isinstance(vocab, Vocab):
        vocab = Vocab.load(vocab)
    if vocab is None:
        level = level or "char"
        _check_level(level)
        _check_boundary(boundary, level)
        return None, level
    if level is not None and level != vocab.level:
        raise ValueError(f"level={level!r} but the given vocabulary is {vocab.level}-level")
    if boundary is not None and boundary != vocab.boundary:
        raise ValueError(f"boundary={boundary!r} but the given vocabulary's boundary is {vocab.boundary!r}")
    if min_count != 1 or max_size is not None:
        raise ValueError("min_count and max_size apply only when building a vocabulary, not with a given one")
    return vocab, vocab.level


def _check_inputs(train: list[Path], val: list[Path]) -> None:
    if not train:
        raise ValueError("no input text files given")
    for p in train + val:
        _check_readable(p)
    overlap = {p.resolve() for p in train} & {p.resolve() for p in val}
    if overlap:
        raise ValueError(f"{sorted(map(str, overlap))[0]} is both a training and a validation file")


# --------------------------------------------------------------------------------------- the corpus


@dataclass(frozen=True, eq=False, repr=False)
class Corpus:
    """One split of a tokenised text: ids (memory-mapped when prepared), document starts, vocabulary.

    Document d is `tokens[starts[d]:starts[d+1]]`; the final end is appended to `starts`, as in
    `layout.Sequences`. `n_unknown` counts tokens that the vocabulary lacks (encoded as id 0);
    `documents` names the source of each document.
    """

    tokens: np.ndarray
    starts: np.ndarray
    vocab: Vocab
    split: str = "train"
    n_unknown: int = 0
    documents: tuple[str, ...] = ()
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"Corpus({self.summary()})"

    @property
    def n_documents(self) -> int:
        return len(self.starts) - 1

    def to_sequences(self) -> Sequences:
        """The corpus as `layout.Sequences`, one sequence per document (no copy of the ids)."""
        return Sequences(data=self.tokens, starts=self.starts)

    def summary(self) -> str:
        """One line: split, size, documents, vocabulary and unknown tokens."""
        n = len(self)
        unknown = f"{self.n_unknown:,} unknown ({self.n_unknown / n:.2%})" if n else "0 unknown"
        where = f" from {self.path}" if self.path else ""
        return (
            f"{self.split}: {n:,} {self.vocab.level} tokens in {self.n_documents} document(s){where}, "
            f"vocabulary {len(self.vocab):,} ({self.vocab.dtype.name}), {unknown}"
        )


def prepare_text(
    inputs: PathLike | Sequence[PathLike],
    out_dir: PathLike,
    level: str | None = None,
    *,
    val: PathLike | Sequence[PathLike] | None = None,
    val_fraction: float | None = None,
    vocab: Vocab | PathLike | None = None,
    boundary: str | None = None,
    min_count: int = 1,
    max_size: int | None = None,
    replace_invalid: bool = False,
) -> dict[str, Any]:
    """Tokenise text files once into compact token files that `load_corpus` memory-maps.

    Each input file is one document. Writes to `out_dir`: `train.bin` (raw little-endian ids in
    the vocabulary's dtype), `val.bin` with `val` files or `val_fraction` (the last fraction of the
    token stream), `vocab.json` and `corpus.json`. The vocabulary (built unless given; `level` is
    "char" by default, or the given vocabulary's) comes from the training part only. Files are read
    in chunks, so memory stays bounded whatever their size. Returns a summary dict.
    """
    started = time.perf_counter()
    train_paths = _as_paths(inputs, "input text files")
    val_paths = _as_paths(val, "validation files")
    _check_fraction(val_fraction, val_paths)
    vocab, level = _resolve_vocab(vocab, level, boundary, min_count, max_size)
    _check_inputs(train_paths, val_paths)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory: give a directory for the prepared corpus")
    out.mkdir(parents=True, exist_ok=True)
    train_docs = [_Doc(p.name, p) for p in train_paths]
    val_docs = [_Doc(p.name, p) for p in val_paths]
    sinks: dict[str, _FileSink] = {}

    def make_sink(split: str, dtype: np.dtype) -> _FileSink:
        sinks[split] = _FileSink(out / f"{split}.bin.tmp", dtype)
        return sinks[split]

    try:
        vocab, splits = _run(
            train_docs,
            val_docs,
            level=level,
            val_fraction=val_fraction,
            vocab=vocab,
            boundary=boundary,
            min_count=min_count,
            max_size=max_size,
            replace_invalid=replace_invalid,
            make_sink=make_sink,
        )
        for sink in sinks.values():
            sink.file.close()
        manifest = _manifest(vocab, splits, train_docs, val_docs, val_fraction)
        (out / CORPUS_FILE).unlink(missing_ok=True)
        for split in SPLITS:
            if split in sinks:
                os.replace(sinks[split].path, out / f"{split}.bin")
            else:
                (out / f"{split}.bin").unlink(missing_ok=True)
        vocab.save(out / VOCAB_FILE)
        _write_atomic(out / CORPUS_FILE, json.dumps(manifest, indent=1).encode("utf-8"))
    finally:
        for sink in sinks.values():
            sink.file.close()
            sink.path.unlink(missing_ok=True)
    return _summary(manifest, out, time.perf_counter() - started)


def _manifest(
    vocab: Vocab,
    splits: dict[str, _SplitData],
    train_docs: list[_Doc],
    val_docs: list[_Doc],
    val_fraction: float | None,
) -> dict[str, Any]:
    docs = train_docs + val_docs
    used_in: list[set[str]] = [set() for _ in docs]
    split_info = {}
    for name, s in splits.items():
        offset = len(train_docs) if name == "val" and val_docs else 0
        sources = [d + offset for d in s.sources]
        for d in sources:
            used_in[d].add(name)
        split_info[name] = {
            "file": f"{name}.bin",
            "tokens": s.sink.n,
            "n_unknown": s.n_unknown,
            "doc_starts": s.starts,
            "doc_sources": sources,
        }
    return {
        "format": CORPUS_FORMAT,
        "version": CORPUS_VERSION,
        "level": vocab.level,
        "dtype": vocab.dtype.name,
        "byteorder": "little",
        "vocab_file": VOCAB_FILE,
        "vocab_size": len(vocab),
        "boundary": vocab.boundary,
        "val_fraction": val_fraction,
        "n_unknown": sum(s.n_unknown for s in splits.values()),
        "splits": split_info,
        "sources": [
            {
                "name": doc.name,
                "path": str(doc.path),
                "bytes": doc.size,
                "sha256": doc.sha256,
                "tokens": doc.tokens,
                "replaced_invalid": doc.replaced,
                "splits": sorted(used, key=SPLITS.index),
            }
            for doc, used in zip(docs, used_in)
        ],
    }


def _summary(manifest: dict[str, Any], out: Path, seconds: float) -> dict[str, Any]:
    splits = manifest["splits"]
    val = splits.get("val")
    return {
        "out": str(out),
        "level": manifest["level"],
        "vocab_size": manifest["vocab_size"],
        "dtype": manifest["dtype"],
        "documents": len(manifest["sources"]),
        "train_tokens": splits["train"]["tokens"],
        "val_tokens": None if val is None else val["tokens"],
        "train_unknown": splits["train"]["n_unknown"],
        "val_unknown": None if val is None else val["n_unknown"],
        "replaced_invalid": sum(s["replaced_invalid"] for s in manifest["sources"]),
        "seconds": round(seconds, 3),
        "sources": manifest["sources"],
    }


def _corpus_error(path: Path, what: str) -> ValueError:
    return ValueError(f"{path}: {what}")


def _read_manifest(path: PathLike) -> tuple[Path, dict[str, Any]]:
    root = Path(path)
    if root.is_file() and root.name == CORPUS_FILE:
        root = root.parent
    if not root.exists():
        raise FileNotFoundError(2, "No such file or directory", str(root))
    if not root.is_dir():
        raise ValueError(
            f"{root} is a file, not a prepared corpus directory: use text_corpus() for a raw text file, "
            "or prepare it with prepare_text (statefulrnn prepare text)"
        )
    mpath = root / CORPUS_FILE
    if not mpath.is_file():
        raise ValueError(
            f"{root} is not a prepared text corpus (no {CORPUS_FILE}): prepare it with prepare_text "
            "(statefulrnn prepare text), or prepare it again if that was interrupted"
        )
    try:
        m = json.loads(mpath.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _corpus_error(mpath, f"corrupt corpus description ({e}): prepare the corpus again") from None
    if not isinstance(m, dict) or m.get("format") != CORPUS_FORMAT:
        found = m.get("format") if isinstance(m, dict) else type(m).__name__
        raise _corpus_error(mpath, f"not a statefulrnn text corpus (format {found!r}, expected {CORPUS_FORMAT!r})")
    version = m.get("version")
    if not isinstance(version, int) or version < 1:
        raise _corpus_error(mpath, f"no valid format version (got {version!r})")
    if version > CORPUS_VERSION:
        raise _corpus_error(
            mpath,
            f"corpus format version {version} is newer than this statefulrnn reads ({CORPUS_VERSION}): "
            "upgrade statefulrnn or prepare the corpus again",
        )
    for name in ("level", "dtype", "vocab_file", "vocab_size", "splits"):
        if name not in m:
            raise _corpus_error(mpath, f"missing the field {name!r}: prepare the corpus again")
    if m["dtype"] not in _DTYPES:
        raise _corpus_error(mpath, f"unsupported dtype {m['dtype']!r} (expected one of {', '.join(_DTYPES)})")
    if not isinstance(m["splits"], dict) or "train" not in m["splits"]:
        raise _corpus_error(mpath, "no 'train' split: prepare the corpus again")
    return root, m


def _load_split(root: Path, m: dict[str, Any], split: str, vocab: Vocab, verify: bool) -> Corpus:
    mpath = root / CORPUS_FILE
    if split not in m["splits"]:
        raise ValueError(f"{root} has no {split!r} split (it has: {', '.join(m['splits'])})")
    info = m["splits"][split]
    try:
        n = int(info["tokens"])
        starts = [int(s) for s in info["doc_starts"]]
        sources = [int(s) for s in info.get("doc_sources", [])]
        filename = str(info["file"])
        n_unknown = int(info.get("n_unknown", 0))
    except (KeyError, TypeError, ValueError) as e:
        raise _corpus_error(mpath, f"split {split!r} is malformed ({e!r}): prepare the corpus again") from None
    if n < 1 or not starts or starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])) or starts[-1] >= n:
        raise _corpus_error(mpath, f"split {split!r} has invalid document starts: prepare the corpus again")
    bin_path = root / filename
    if not bin_path.is_file():
        raise ValueError(f"{bin_path} is missing: the corpus in {root} is incomplete; prepare it again")
    dtype = _DTYPES[m["dtype"]]
    expected = n * dtype.itemsize
    actual = bin_path.stat().st_size
    if actual != expected:
        raise ValueError(
            f"{bin_path} is truncated or corrupt: {actual:,} bytes, but {CORPUS_FILE} says {n:,} {dtype.name} "
            f"tokens ({expected:,} bytes); prepare the corpus again"
        )
    tokens = np.memmap(bin_path, dtype=dtype, mode="r", shape=(n,))
    if verify:
        step = 1 << 24
        top = max(int(tokens[i : i + step].max()) for i in range(0, n, step))
        if top >= len(vocab):
            raise ValueError(
                f"{bin_path} is corrupt: it holds id {top}, but the vocabulary has {len(vocab)} tokens; "
                "prepare the corpus again"
            )
    names = [s.get("name", "?") if isinstance(s, dict) else "?" for s in m.get("sources", [])]
    documents = tuple(names[d] if 0 <= d < len(names) else "?" for d in sources) if sources else ()
    return Corpus(
        tokens=tokens,
        starts=np.array(starts + [n], dtype=np.int64),
        vocab=vocab,
        split=split,
        n_unknown=n_unknown,
        documents=documents,
        path=root,
    )


def _load_vocab(root: Path, m: dict[str, Any]) -> Vocab:
    vpath = root / str(m["vocab_file"])
    if not vpath.is_file():
        raise ValueError(f"{vpath} is missing: the corpus in {root} is incomplete; prepare it again")
    vocab = Vocab.load(vpath)
    if vocab.level != m["level"] or len(vocab) != m["vocab_size"] or vocab.dtype.name != m["dtype"]:
        raise ValueError(
            f"{vpath} does not belong to this corpus ({vocab.level}-level, {len(vocab)} tokens; {CORPUS_FILE} says "
            f"{m['level']}-level, {m['vocab_size']} tokens in {m['dtype']}): prepare the corpus again"
        )
    return vocab


def load_corpus(path: PathLike, split: str = "train", *, verify: bool = False) -> Corpus:
    """Memory-map one split of a directory written by `prepare_text` (read-only, nothing loaded).

    Every inconsistency (missing or truncated files, an unknown format version, a vocabulary that
    does not match) raises a one-line ValueError; `verify=True` also scans the ids for any outside
    the vocabulary.
    """
    root, m = _read_manifest(path)
    return _load_split(root, m, split, _load_vocab(root, m), verify)


def text_corpus(
    path: PathLike | Sequence[PathLike],
    *,
    level: str | None = None,
    val: PathLike | Sequence[PathLike] | None = None,
    val_fraction: float | None = None,
    vocab: Vocab | PathLike | None = None,
    boundary: str | None = None,
    min_count: int = 1,
    max_size: int | None = None,
    replace_invalid: bool = False,
) -> tuple[Corpus, Corpus | None]:
    """(train, val or None) from a raw text file (or several) or from a prepared directory.

    A raw file is tokenised in memory (nothing is written) at `level` ("char" by default); the
    validation split is the `val` file(s) or the last `val_fraction` of the token stream (the first
    1 - val_fraction trains). The vocabulary is built from the training part only unless given;
    unknown validation tokens are counted in `n_unknown`. A prepared directory is memory-mapped
    with its own splits and vocabulary (asking for another level, split or vocabulary is an error);
    `val_fraction` splits one prepared without a validation split, as views of the memory map.
    """
    paths = _as_paths(path, "text files")
    if len(paths) == 1 and paths[0].is_dir():
        return _prepared_corpus(paths[0], level, val, val_fraction, vocab, boundary, min_count, max_size)
    val_paths = _as_paths(val, "validation files")
    _check_fraction(val_fraction, val_paths)
    vocab, level = _resolve_vocab(vocab, level, boundary, min_count, max_size)
    _check_inputs(paths, val_paths)
    train_docs = [_Doc.of_file(p, replace_invalid) for p in paths]
    val_docs = [_Doc.of_file(p, replace_invalid) for p in val_paths]
    vocab, splits = _run(
        train_docs,
        val_docs,
        level=level,
        val_fraction=val_fraction,
        vocab=vocab,
        boundary=boundary,
        min_count=min_count,
        max_size=max_size,
        replace_invalid=replace_invalid,
        make_sink=lambda split, dtype: _MemorySink(dtype),
    )
    out = []
    for name in SPLITS:
        s = splits.get(name)
        if s is None:
            out.append(None)
            continue
        docs = val_docs if name == "val" and val_docs else train_docs
        tokens = s.sink.array()
        out.append(
            Corpus(
                tokens=tokens,
                starts=np.array(s.starts + [len(tokens)], dtype=np.int64),
                vocab=vocab,
                split=name,
                n_unknown=s.n_unknown,
                documents=tuple(docs[d].name for d in s.sources),
            )
        )
    return out[0], out[1]


def _prepared_corpus(
    root: Path,
    level: str | None,
    val: Any,
    val_fraction: float | None,
    vocab: Vocab | PathLike | None,
    boundary: str | None,
    min_count: int,
    max_size: int | None,
) -> tuple[Corpus, Corpus | None]:
    root, m = _read_manifest(root)
    has_val = "val" in m["splits"]
    fixed = [
        name
        for name, value, default in (
            ("val", val, None),
            ("val_fraction", val_fraction if has_val else None, None),
            ("boundary", boundary, None),
            ("min_count", min_count, 1),
            ("max_size", max_size, None),
        )
        if value != default
    ]
    if fixed:
        raise ValueError(
            f"{root} is a prepared corpus: its {'/'.join(fixed)} cannot change here (prepare_text fixed them); "
            "leave them out, or prepare it again with the settings you want"
        )
    own = _load_vocab(root, m)
    if level is not None and level != own.level:
        raise ValueError(f"{root} was prepared at {own.level} level, not {level}: ask for level={own.level!r} or none")
    if vocab is not None:
        if not isinstance(vocab, Vocab):
            vocab = Vocab.load(vocab)
        if vocab != own:
            raise ValueError(
                f"{root} was prepared with a different vocabulary ({own!r}) than the one given ({vocab!r}): "
                "prepare it again with that vocabulary (prepare_text(..., vocab=...))"
            )
    train = _load_split(root, m, "train", own, verify=False)
    if has_val:
        return train, _load_split(root, m, "val", own, verify=False)
    if val_fraction is None:
        return train, None
    _check_fraction(val_fraction, [])
    return _split_corpus(train, val_fraction)


def _split_corpus(corpus: Corpus, val_fraction: float) -> tuple[Corpus, Corpus]:
    """The first 1 - val_fraction of a corpus and the rest, as views (nothing copied)."""
    n = len(corpus)
    cut = int(n * (1 - val_fraction))
    if not 0 < cut < n:
        part = "training" if cut <= 0 else "validation"
        raise ValueError(f"val_fraction={val_fraction} of {n:,} tokens leaves the {part} split empty")
    starts = corpus.starts[:-1]
    first_val = int(np.searchsorted(starts, cut, side="right")) - 1
    train_starts = np.append(starts[starts < cut], cut)
    val_starts = np.concatenate([[0], starts[starts > cut] - cut, [n - cut]]).astype(np.int64)
    val_unknown = 0
    if corpus.n_unknown:
        val_unknown = min(corpus.n_unknown, int(np.count_nonzero(corpus.tokens[cut:] == 0)))
    docs = corpus.documents
    common = {"vocab": corpus.vocab, "path": corpus.path}
    return (
        Corpus(
            corpus.tokens[:cut],
            train_starts,
            split="train",
            n_unknown=corpus.n_unknown - val_unknown,
            documents=docs[: len(train_starts) - 1],
            **common,
        ),
        Corpus(
            corpus.tokens[cut:],
            val_starts,
            split="val",
            n_unknown=val_unknown,
            documents=docs[first_val:] if docs else (),
            **common,
        ),
    )


__all__ = [
    "EOS",
    "UNK",
    "Corpus",
    "UnknownTokenError",
    "Vocab",
    "decode_utf8",
    "load_corpus",
    "prepare_text",
    "read_text",
    "text_corpus",
]
