"""Strict UTF-8 decoding: a wrong encoding is an error naming the file, byte offset and line.

`decode_chunk` decodes a block of a stream (keeping an incomplete sequence for the next block);
`decode_utf8` and `read_text` decode a whole text. Replacement of invalid bytes, when asked for,
follows Python's errors="replace" exactly.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path

PathLike = str | os.PathLike


def _invalid_utf8(source: str, data: bytes, pos: int, err: UnicodeDecodeError, base: int, lines: int) -> ValueError:
    at = pos + err.start
    line = lines + data.count(b"\n", 0, at) + 1
    return ValueError(
        f"{source}: invalid UTF-8 at byte offset {base + at} (line {line}, byte 0x{data[at]:02x}: {err.reason}); "
        "convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8), or pass replace_invalid=True "
        "(CLI: --replace-invalid) to replace invalid bytes with U+FFFD"
    )


def decode_chunk(
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
    text, _, replaced = decode_chunk(bytes(data), final=True, source=source, replace=replace_invalid)
    return text.removeprefix("\ufeff"), replaced


def check_readable(path: Path) -> None:
    """Raise FileNotFoundError or IsADirectoryError unless `path` is a file to read."""
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


__all__ = ["check_readable", "decode_chunk", "decode_utf8", "read_text"]
