"""Documents to token ids: the one pass shared by `text_corpus` (in memory) and `prepare_text` (to files).

Each input file is one document, read whole (`Document.of_file`) or streamed in chunks with bounded
memory. `encode_documents` counts tokens when it has to build the vocabulary (from the training part
only), then encodes every split into a sink: arrays in memory (`MemorySink`) or raw id files
(`FileSink`). The argument checks shared by both entry points are here too.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .decode import check_readable, decode_chunk, decode_utf8
from .tokens import TokenCounts, check_boundary, check_level, cut_pieces, raw_tokens, text_chunks
from .vocab import Vocab

PathLike = str | os.PathLike

_CHUNK_BYTES = 4 << 20  # read size when streaming a file


@dataclass
class Document:
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
    def of_file(cls, path: Path, replace_invalid: bool) -> Document:
        """The file read into memory (for `text_corpus`)."""
        data = path.read_bytes()
        if not data:
            raise ValueError(f"{path} is empty")
        text, replaced = decode_utf8(data, source=str(path), replace_invalid=replace_invalid)
        return cls(path.name, path, text, len(data), hashlib.sha256(data).hexdigest(), replaced)

    def chunks(self, replace_invalid: bool) -> Iterator[str]:
        """The document's text in chunks (a file is streamed and its size, hash and replacements recorded)."""
        if self.text is not None:
            yield from text_chunks(self.text)
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
                text, used, n = decode_chunk(
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


class MemorySink:
    """Token ids of one split collected in memory."""

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


class FileSink:
    """Token ids of one split written to a raw little-endian file."""

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self.path, self.dtype, self.n = path, dtype.newbyteorder("<"), 0
        self.file = open(path, "wb")

    def write(self, ids: np.ndarray) -> None:
        if len(ids):
            self.file.write(np.ascontiguousarray(ids, dtype=self.dtype).data)
            self.n += len(ids)


@dataclass
class SplitData:
    """One split being encoded: its sink, document starts and sources, and unknown-token count."""

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
    docs: Sequence[Document], level: str, replace_invalid: bool, boundary: bool
) -> Iterator[tuple[int, np.ndarray | list[str] | None]]:
    """(document index, tokens) pieces of `docs`; None stands for the boundary token."""
    for d in range(len(docs)):
        doc = docs[d]
        if boundary and d:
            yield d, None
        n = 0
        doc.piece_lengths = []
        for piece in cut_pieces(doc.chunks(replace_invalid), level):
            tokens = raw_tokens(piece, level)
            doc.piece_lengths.append(len(tokens))
            if len(tokens):
                n += len(tokens)
                yield d, tokens
        if n == 0:
            what = "contains no text" if level == "char" else "has no words (only whitespace)"
            raise ValueError(f"{doc.path or doc.name} {what}")
        doc.tokens = n


def _encode(
    docs: Sequence[Document],
    vocab: Vocab,
    replace_invalid: bool,
    split: SplitData,
    rest: SplitData | None = None,
    cut: int | None = None,
) -> None:
    """Encode `docs` into `split`; from stream position `cut` on, into `rest`."""
    boundary_ids = np.array([vocab.boundary_id or 0], dtype=vocab.dtype)
    pos, current = 0, -1
    for d, tokens in _stream(docs, vocab.level, replace_invalid, vocab.boundary is not None):
        if tokens is None:
            ids, unknown = boundary_ids, None
        else:
            ids, unknown = vocab.encode_tokens(tokens)
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


def as_paths(paths: PathLike | Sequence[PathLike] | None, what: str) -> list[Path]:
    """One path or several as a list of Paths ([] for None; ValueError naming `what` for an empty list)."""
    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    out = [Path(p) for p in paths]
    if not out:
        raise ValueError(f"no {what} given")
    return out


def check_fraction(val_fraction: float | None, val: list[Path]) -> None:
    """Raise ValueError unless `val_fraction` is None or in (0, 1) and no validation files are given."""
    if val_fraction is None:
        return
    if val:
        raise ValueError("give either a validation file (val) or val_fraction, not both")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be a number between 0 and 1 (exclusive), got {val_fraction!r}")


def encode_documents(
    train_docs: list[Document],
    val_docs: list[Document],
    *,
    level: str,
    val_fraction: float | None,
    vocab: Vocab | None,
    boundary: str | None,
    min_count: int,
    max_size: int | None,
    replace_invalid: bool,
    make_sink: Any,
) -> tuple[Vocab, dict[str, SplitData]]:
    """Count (if needed), build the vocabulary from the training part only, and encode every split."""
    has_boundary = (vocab.boundary if vocab is not None else boundary) is not None
    cut = None
    if vocab is None or val_fraction is not None:
        counts = TokenCounts(level) if vocab is None else None
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
                    for piece, n in zip(cut_pieces(doc.chunks(replace_invalid), level), lengths):
                        if pos + n > cut:
                            counts.add(raw_tokens(piece, level)[max(cut - pos, 0) :], sign=-1)
                        pos += n
        if vocab is None:
            vocab = Vocab.from_counts(
                level, counts.as_dict(), min_count=min_count, max_size=max_size, boundary=boundary
            )
    splits = {"train": SplitData(make_sink("train", vocab.dtype))}
    if val_fraction is not None or val_docs:
        splits["val"] = SplitData(make_sink("val", vocab.dtype))
    _encode(train_docs, vocab, replace_invalid, splits["train"], splits.get("val"), cut)
    if val_docs:
        _encode(val_docs, vocab, replace_invalid, splits["val"])
    return vocab, splits


def resolve_vocab(
    vocab: Vocab | PathLike | None, level: str | None, boundary: str | None, min_count: int, max_size: int | None
) -> tuple[Vocab | None, str]:
    """(the given vocabulary, loaded if a path, or None to build one; the level), checked against the rest."""
    if vocab is not None and not isinstance(vocab, Vocab):
        vocab = Vocab.load(vocab)
    if vocab is None:
        level = level or "char"
        check_level(level)
        check_boundary(boundary, level)
        return None, level
    if level is not None and level != vocab.level:
        raise ValueError(f"level={level!r} but the given vocabulary is {vocab.level}-level")
    if boundary is not None and boundary != vocab.boundary:
        raise ValueError(f"boundary={boundary!r} but the given vocabulary's boundary is {vocab.boundary!r}")
    if min_count != 1 or max_size is not None:
        raise ValueError("min_count and max_size apply only when building a vocabulary, not with a given one")
    return vocab, vocab.level


def check_inputs(train: list[Path], val: list[Path]) -> None:
    """Raise unless there are training files, every file is readable, and none is both train and val."""
    if not train:
        raise ValueError("no input text files given")
    for p in train + val:
        check_readable(p)
    overlap = {p.resolve() for p in train} & {p.resolve() for p in val}
    if overlap:
        raise ValueError(f"{sorted(map(str, overlap))[0]} is both a training and a validation file")


__all__ = [
    "Document",
    "FileSink",
    "MemorySink",
    "SplitData",
    "as_paths",
    "check_fraction",
    "check_inputs",
    "encode_documents",
    "resolve_vocab",
]
