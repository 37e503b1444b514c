"""How text splits into tokens, and token counting: the one tokeniser every text path uses.

- `char`: every Unicode character is a token (line breaks and carriage returns included).
- `word`: the text is split on whitespace and every line break becomes an `<eos>` token, as in
  pytorch/examples' word_language_model.

`tokenize` gives the tokens as a vocabulary names them. The encoders use its fast form: `text_chunks`
cuts a text held in memory into chunks, `cut_pieces` re-cuts chunks so that no word straddles two
pieces, and `raw_tokens` splits one piece (code points as uint32 at char level; words with "\\n" for
each line end at word level). `TokenCounts` counts tokens piece by piece. Only numpy here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

import numpy as np

_CHUNK_CHARS = 4 << 20  # piece size when tokenising a text held in memory
UNK = "<unk>"
EOS = "<eos>"
LEVELS = ("char", "word")


def check_level(level: str) -> None:
    """Raise ValueError unless `level` is "char" or "word"."""
    if level not in LEVELS:
        raise ValueError(f"level must be 'char' or 'word', got {level!r}")


def check_boundary(boundary: str | None, level: str) -> None:
    """Raise ValueError unless `boundary` is None or usable as the document-boundary token at `level`."""
    if boundary is None:
        return
    if not isinstance(boundary, str) or not boundary or any(c.isspace() for c in boundary):
        raise ValueError(f"boundary must be a non-empty token without whitespace, got {boundary!r}")
    if boundary in (UNK, EOS):
        raise ValueError(f"boundary {boundary!r} is reserved: choose another, e.g. '<doc>'")
    if level == "char" and len(boundary) == 1:
        raise ValueError(
            f"a char-level boundary must be longer than one character (got {boundary!r}, which could be a "
            "character of the text): use e.g. '<doc>'"
        )


def raw_tokens(piece: str, level: str) -> np.ndarray | list[str]:
    """Char level: the code points as uint32; word level: the words, with "\\n" for each line end."""
    if level == "char":
        return np.frombuffer(piece.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    lines = piece.split("\n")
    words: list[str] = []
    for line in lines[:-1]:
        words.extend(line.split())
        words.append("\n")
    words.extend(lines[-1].split())
    return words


def tokenize(text: str, level: str) -> list[str]:
    r"""The tokens of `text` as a vocabulary names them: its characters (char level), or its words
    with `<eos>` for each line break (word level). `Vocab.encode(text)` gives the ids of exactly these
    tokens (a literal "<eos>" word is the line-end token too).

    >>> tokenize("to be\nor not", "word")
    ['to', 'be', '<eos>', 'or', 'not']
    >>> tokenize("ab\n", "char")
    ['a', 'b', '\n']
    """
    check_level(level)
    if level == "char":
        return list(text)
    return [EOS if t == "\n" else t for t in raw_tokens(text, level)]


def text_chunks(text: str) -> Iterator[str]:
    """`text` in consecutive slices of a bounded size (tokenised one at a time to bound memory)."""
    for i in range(0, len(text), _CHUNK_CHARS):
        yield text[i : i + _CHUNK_CHARS]


def cut_pieces(chunks: Iterable[str], level: str) -> Iterator[str]:
    """Re-cut text chunks so that no word straddles two pieces (word level; char pieces pass as they are)."""
    if level == "char":
        yield from chunks
        return
    carry = ""
    for chunk in chunks:
        buf = carry + chunk
        cut = buf.rfind("\n") + 1 or max(buf.rfind(" "), buf.rfind("\t")) + 1
        carry = buf[cut:]
        if cut:
            yield buf[:cut]
    if carry:
        yield carry


class TokenCounts:
    """Token counts of `raw_tokens` pieces, addable and subtractable piece by piece."""

    def __init__(self, level: str) -> None:
        self.level = level
        self.chars = np.zeros(0, dtype=np.int64)
        self.words: Counter[str] = Counter()

    def add(self, tokens: np.ndarray | list[str], sign: int = 1) -> None:
        """Count the tokens of one piece (`sign=-1` takes them away again)."""
        if self.level == "word":
            if sign > 0:
                self.words.update(tokens)
            else:
                self.words.subtract(tokens)
            return
        if len(tokens) == 0:
            return
        counts = np.bincount(tokens)
        if len(counts) > len(self.chars):
            self.chars = np.concatenate([self.chars, np.zeros(len(counts) - len(self.chars), np.int64)])
        self.chars[: len(counts)] += sign * counts

    def as_dict(self) -> dict[str, int]:
        """Token -> count for every token seen a positive number of times (line ends left out)."""
        if self.level == "word":
            return {t: c for t, c in self.words.items() if c > 0 and t != "\n"}
        return {chr(i): int(self.chars[i]) for i in np.flatnonzero(self.chars > 0)}


__all__ = [
    "EOS",
    "LEVELS",
    "UNK",
    "TokenCounts",
    "check_boundary",
    "check_level",
    "cut_pieces",
    "raw_tokens",
    "text_chunks",
    "tokenize",
]
