"""Tokenised text as `Corpus` splits: from a raw text file in memory, or memory-mapped from a prepared directory.

`text_corpus` takes either; `load_corpus` memory-maps one split of a directory that `prepare_text`
wrote, checking every file against its manifest (`corpus.json`, whose format is defined here), so a
corpus larger than memory can be trained on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..layout import Sequences
from ..runs import VOCAB
from .pipeline import Document, MemorySink, as_paths, check_fraction, check_inputs, encode_documents, resolve_vocab
from .vocab import Vocab

CORPUS_FORMAT = "statefulrnn-text-corpus"
CORPUS_VERSION = 1
CORPUS_FILE = "corpus.json"
VOCAB_FILE = VOCAB  # the vocabulary's file name, as in a run directory
SPLITS = ("train", "val")

PathLike = str | os.PathLike

_DTYPES = {"uint8": np.dtype("<u1"), "uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}


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
    paths = as_paths(path, "text files")
    if len(paths) == 1 and paths[0].is_dir():
        return _prepared_corpus(paths[0], level, val, val_fraction, vocab, boundary, min_count, max_size)
    val_paths = as_paths(val, "validation files")
    check_fraction(val_fraction, val_paths)
    vocab, level = resolve_vocab(vocab, level, boundary, min_count, max_size)
    check_inputs(paths, val_paths)
    train_docs = [Document.of_file(p, replace_invalid) for p in paths]
    val_docs = [Document.of_file(p, replace_invalid) for p in val_paths]
    vocab, splits = encode_documents(
        train_docs,
        val_docs,
        level=level,
        val_fraction=val_fraction,
        vocab=vocab,
        boundary=boundary,
        min_count=min_count,
        max_size=max_size,
        replace_invalid=replace_invalid,
        make_sink=lambda split, dtype: MemorySink(dtype),
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
    check_fraction(val_fraction, [])
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


__all__ = ["CORPUS_FILE", "CORPUS_FORMAT", "CORPUS_VERSION", "SPLITS", "Corpus", "load_corpus", "text_corpus"]
