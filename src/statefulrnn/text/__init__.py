"""Text as token ids: tokenising, vocabularies, strict UTF-8 reading, and corpora in memory or memory-mapped.

    tokens.py    how text splits into tokens (`tokenize`), and token counting
    vocab.py     `Vocab`: token <-> id, built from counts, saved as vocab.json
    decode.py    strict UTF-8 decoding that names the byte offset of a bad byte
    pipeline.py  documents to token ids, shared by the in-memory and the on-disk path
    corpus.py    `Corpus`, `text_corpus`, `load_corpus` (memory-maps a prepared directory)
    prepare.py   `prepare_text`: tokenise once into raw id files
    lm.py        `train_text`, `evaluate_text`, `load_text_run` (imports the trainer)

Importing this package never imports training code: the names of `lm.py` load on first use, so
serving can read vocabularies without pulling in the trainer.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .corpus import CORPUS_FILE, CORPUS_FORMAT, CORPUS_VERSION, Corpus, load_corpus, text_corpus
from .decode import decode_utf8, read_text
from .prepare import prepare_text
from .tokens import EOS, LEVELS, UNK, tokenize
from .vocab import UnknownTokenError, Vocab

_LAZY = ("evaluate_text", "load_text_run", "train_text")


def __getattr__(name: str) -> Any:
    """`train_text`, `evaluate_text` and `load_text_run`, imported from `lm.py` (and the trainer) on first use."""
    if name in _LAZY:  # PEP 562; import_module keeps lm.py out of this package's own import graph
        return getattr(import_module(f"{__name__}.lm"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CORPUS_FILE",
    "CORPUS_FORMAT",
    "CORPUS_VERSION",
    "EOS",
    "LEVELS",
    "UNK",
    "Corpus",
    "UnknownTokenError",
    "Vocab",
    "decode_utf8",
    "evaluate_text",
    "load_corpus",
    "load_text_run",
    "prepare_text",
    "read_text",
    "text_corpus",
    "tokenize",
    "train_text",
]
