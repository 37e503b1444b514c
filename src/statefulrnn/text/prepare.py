"""Writing a prepared corpus: text files tokenised once into raw id files that `load_corpus` memory-maps.

`prepare_text` writes `train.bin` and `val.bin` (little-endian ids in the vocabulary's smallest
unsigned dtype), `vocab.json` and `corpus.json` (the manifest, written last, so that an interrupted
run leaves no corpus that looks complete). Files are streamed, so memory stays bounded.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write
from .corpus import CORPUS_FILE, CORPUS_FORMAT, CORPUS_VERSION, SPLITS, VOCAB_FILE
from .pipeline import (
    Document,
    FileSink,
    SplitData,
    as_paths,
    check_fraction,
    check_inputs,
    encode_documents,
    resolve_vocab,
)
from .vocab import Vocab

PathLike = str | os.PathLike


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
    train_paths = as_paths(inputs, "input text files")
    val_paths = as_paths(val, "validation files")
    check_fraction(val_fraction, val_paths)
    vocab, level = resolve_vocab(vocab, level, boundary, min_count, max_size)
    check_inputs(train_paths, val_paths)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory: give a directory for the prepared corpus")
    out.mkdir(parents=True, exist_ok=True)
    train_docs = [Document(p.name, p) for p in train_paths]
    val_docs = [Document(p.name, p) for p in val_paths]
    sinks: dict[str, FileSink] = {}

    def make_sink(split: str, dtype: np.dtype) -> FileSink:
        sinks[split] = FileSink(out / f"{split}.bin.tmp", dtype)
        return sinks[split]

    try:
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
        atomic_write(out / CORPUS_FILE, json.dumps(manifest, indent=1).encode("utf-8"))
    finally:
        for sink in sinks.values():
            sink.file.close()
            sink.path.unlink(missing_ok=True)
    return _summary(manifest, out, time.perf_counter() - started)


def _manifest(
    vocab: Vocab,
    splits: dict[str, SplitData],
    train_docs: list[Document],
    val_docs: list[Document],
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


__all__ = ["prepare_text"]
