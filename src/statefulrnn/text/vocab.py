"""Token vocabularies: token <-> id, with id 0 always `<unk>`; saved and loaded as JSON.

How text splits into tokens lives in `tokens.py` (`tokenize` is re-exported here); this module maps
tokens to ids and back, builds a vocabulary from counts, and reads and writes `vocab.json`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write
from .tokens import (
    EOS,
    LEVELS,
    UNK,
    TokenCounts,
    check_boundary,
    check_level,
    cut_pieces,
    raw_tokens,
    text_chunks,
    tokenize,
)

PathLike = str | os.PathLike
VOCAB_FORMAT = "statefulrnn-vocab"
VOCAB_VERSION = 1


class UnknownTokenError(KeyError, ValueError):
    """A token the vocabulary does not have (both a KeyError and a ValueError)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _dtype_for(size: int) -> np.dtype:
    if size <= 1 << 8:
        return np.dtype(np.uint8)
    if size <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


@dataclass(frozen=True, repr=False)
class Vocab:
    """A token vocabulary: `tokens[i]` is the token with id i, and id 0 is always `<unk>`.

    Word-level vocabularies also hold `<eos>` (one per line break); `boundary`, when set, is the
    token that begins every document after the first.
    """

    level: str
    tokens: tuple[str, ...]
    boundary: str | None = None

    def __post_init__(self) -> None:
        check_level(self.level)
        if isinstance(self.tokens, str) or not all(isinstance(t, str) for t in self.tokens):
            raise ValueError("tokens must be a sequence of strings")
        object.__setattr__(self, "tokens", tuple(self.tokens))
        check_boundary(self.boundary, self.level)
        if not self.tokens or self.tokens[0] != UNK:
            raise ValueError(f"token 0 must be {UNK!r}")
        specials = self._specials
        for s in specials:
            if s not in self.tokens:
                raise ValueError(f"a {self.level}-level vocabulary with boundary={self.boundary!r} must hold {s!r}")
        seen: dict[str, int] = {}
        for i, t in enumerate(self.tokens):
            if t in seen:
                raise ValueError(f"token {t!r} appears twice (ids {seen[t]} and {i})")
            seen[t] = i
            if t in specials:
                continue
            if self.level == "char" and len(t) != 1:
                raise ValueError(f"char-level token {i} is {t!r}: char tokens must be single characters")
            if self.level == "word" and (not t or any(c.isspace() for c in t)):
                raise ValueError(f"word-level token {i} is {t!r}: word tokens must be non-empty, without whitespace")

    @property
    def _specials(self) -> tuple[str, ...]:
        return (UNK,) + ((EOS,) if self.level == "word" else ()) + ((self.boundary,) if self.boundary else ())

    @classmethod
    def build(
        cls,
        texts: str | Iterable[str],
        level: str = "char",
        *,
        min_count: int = 1,
        max_size: int | None = None,
        boundary: str | None = None,
    ) -> Vocab:
        """The vocabulary of `texts` (one text or several): most frequent tokens first.

        Ties are broken by the token's code points, so the same text always gives the same ids.
        Tokens seen fewer than `min_count` times are left out (they encode as `<unk>`);
        `max_size` caps the whole vocabulary, special tokens included.
        """
        check_level(level)
        counts = TokenCounts(level)
        for text in [texts] if isinstance(texts, str) else texts:
            if not isinstance(text, str):
                raise TypeError(f"texts must be strings, got {type(text).__name__}")
            for piece in cut_pieces(text_chunks(text), level):
                counts.add(raw_tokens(piece, level))
        return cls.from_counts(level, counts.as_dict(), min_count=min_count, max_size=max_size, boundary=boundary)

    @classmethod
    def from_counts(
        cls, level: str, counts: dict[str, int], *, min_count: int, max_size: int | None, boundary: str | None
    ) -> Vocab:
        """The vocabulary of token `counts` (as `TokenCounts.as_dict` gives them); see `build`."""
        check_boundary(boundary, level)
        if not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"min_count must be a positive integer, got {min_count!r}")
        specials = [UNK] + ([EOS] if level == "word" else []) + ([boundary] if boundary else [])
        if max_size is not None and (not isinstance(max_size, int) or max_size < len(specials)):
            raise ValueError(
                f"max_size must be an integer of at least {len(specials)} (the special tokens {specials}), "
                f"got {max_size!r}"
            )
        ranked = sorted(
            ((t, c) for t, c in counts.items() if c >= min_count and t not in specials), key=lambda tc: (-tc[1], tc[0])
        )
        if max_size is not None:
            ranked = ranked[: max_size - len(specials)]
        return cls(level, tuple(specials) + tuple(t for t, _ in ranked), boundary)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._index

    def __repr__(self) -> str:
        extra = f", boundary={self.boundary!r}" if self.boundary else ""
        return f"Vocab(level={self.level!r}, size={len(self)}{extra})"

    @property
    def dtype(self) -> np.dtype:
        """The smallest unsigned dtype (uint8, uint16 or uint32) that holds every id."""
        return _dtype_for(len(self))

    @property
    def eos_id(self) -> int | None:
        """The id of `<eos>` (word level), else None."""
        return self._index.get(EOS) if self.level == "word" else None

    @property
    def boundary_id(self) -> int | None:
        """The id of the document-boundary token, or None without one."""
        return None if self.boundary is None else self._index[self.boundary]

    def id_of(self, token: str) -> int:
        """The id of `token`; raises UnknownTokenError (a KeyError and ValueError) naming it if absent."""
        try:
            return self._index[token]
        except (KeyError, TypeError):
            raise UnknownTokenError(
                f"token {token!r} is not in the {self.level}-level vocabulary of {len(self):,} tokens"
            ) from None

    @cached_property
    def _index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    @cached_property
    def _char_table(self) -> np.ndarray:
        table = np.zeros(0x110000, dtype=self.dtype)
        for i, t in enumerate(self.tokens):
            if len(t) == 1:
                table[ord(t)] = i
        return table

    @cached_property
    def _word_index(self) -> _WordIndex:
        return _WordIndex({**self._index, "\n": self._index[EOS]})

    @cached_property
    def _decode_table(self) -> list[str]:
        return ["\n" if t == EOS and self.level == "word" else t for t in self.tokens]

    def encode_tokens(self, tokens: np.ndarray | list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """Ids of `raw_tokens` output, and a mask of the unknown ones (None when there are none)."""
        if self.level == "char":
            ids = self._char_table[tokens]
            unknown = ids == 0
        else:
            raw = np.fromiter(map(self._word_index.__getitem__, tokens), dtype=np.int64, count=len(tokens))
            unknown = raw < 0
            raw[unknown] = 0
            ids = raw.astype(self.dtype)
        return ids, unknown if unknown.any() else None

    def encode(self, text: str) -> tuple[np.ndarray, int]:
        """The ids of `text` (in `dtype`) and how many of its tokens were unknown (encoded as 0)."""
        parts, n_unknown = [], 0
        for piece in cut_pieces(text_chunks(text), self.level):
            ids, unknown = self.encode_tokens(raw_tokens(piece, self.level))
            parts.append(ids)
            n_unknown += 0 if unknown is None else int(unknown.sum())
        ids = np.concatenate(parts) if parts else np.zeros(0, self.dtype)
        return ids, n_unknown

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """The text of `ids`: characters joined (char level), or words joined by spaces with `<eos>`
        as a line break (word level). Unknown ids decode as `<unk>`."""
        ids = np.asarray(ids)
        if ids.size == 0:
            return ""
        if ids.dtype.kind not in "iu":
            raise ValueError(f"ids must be integers, got dtype {ids.dtype}")
        ids = ids.reshape(-1)
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= len(self):
            bad = lo if lo < 0 else hi
            raise ValueError(f"id {bad} is outside this vocabulary (ids 0..{len(self) - 1})")
        table = self._decode_table
        strings = [table[i] for i in ids.tolist()]
        if self.level == "char":
            return "".join(strings)
        return " ".join(strings).replace(" \n", "\n").replace("\n ", "\n")

    def to_dict(self) -> dict[str, Any]:
        """The vocabulary as a JSON-ready dict (format name and version included)."""
        return {
            "format": VOCAB_FORMAT,
            "version": VOCAB_VERSION,
            "level": self.level,
            "boundary": self.boundary,
            "size": len(self),
            "tokens": list(self.tokens),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Vocab:
        """The vocabulary of `to_dict()`; ValueError saying what is wrong for anything else."""
        if not isinstance(data, dict):
            raise ValueError(f"not a statefulrnn vocabulary (a JSON {type(data).__name__}, expected an object)")
        if data.get("format") != VOCAB_FORMAT:
            raise ValueError(f"not a statefulrnn vocabulary (format {data.get('format')!r}, expected {VOCAB_FORMAT!r})")
        version = data.get("version")
        if not isinstance(version, int) or version < 1:
            raise ValueError(f"vocabulary has no valid format version (got {version!r})")
        if version > VOCAB_VERSION:
            raise ValueError(
                f"vocabulary format version {version} is newer than this statefulrnn reads ({VOCAB_VERSION}): "
                "upgrade statefulrnn"
            )
        for name in ("level", "tokens"):
            if name not in data:
                raise ValueError(f"vocabulary is missing the field {name!r}")
        tokens = data["tokens"]
        if not isinstance(tokens, list):
            raise ValueError("vocabulary field 'tokens' must be a list of strings")
        if "size" in data and data["size"] != len(tokens):
            raise ValueError(f"vocabulary says size {data['size']!r} but holds {len(tokens)} tokens")
        try:
            return cls(data["level"], tuple(tokens), data.get("boundary"))
        except ValueError as e:
            raise ValueError(f"invalid vocabulary: {e}") from None

    def to_json(self, *, ensure_ascii: bool = False) -> str:
        """The vocabulary as JSON text (one token per line)."""
        return json.dumps(self.to_dict(), ensure_ascii=ensure_ascii, indent=0)

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        """The vocabulary of `to_json()` text; ValueError for invalid JSON or a foreign document."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"not a statefulrnn vocabulary (invalid JSON at line {e.lineno}: {e.msg})") from None
        return cls.from_dict(data)

    def save(self, path: PathLike) -> None:
        """Write the vocabulary to `path` as UTF-8 JSON (atomically: a crash leaves no half file)."""
        try:
            data = self.to_json().encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: only JSON escapes can carry them
            data = self.to_json(ensure_ascii=True).encode("ascii")
        atomic_write(Path(path), data)

    @classmethod
    def load(cls, path: PathLike) -> Vocab:
        """Read a vocabulary written by `save`; ValueError naming the file if it is corrupt or foreign."""
        path = Path(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not a statefulrnn vocabulary file (not UTF-8 JSON)") from None
        try:
            return cls.from_json(text)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


class _WordIndex(dict):
    """Word -> id, with -1 for a word it lacks."""

    def __missing__(self, key: str) -> int:
        return -1


__all__ = [
    "EOS",
    "LEVELS",
    "UNK",
    "VOCAB_FORMAT",
    "VOCAB_VERSION",
    "UnknownTokenError",
    "Vocab",
    "tokenize",
]
