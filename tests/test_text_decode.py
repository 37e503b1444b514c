"""Strict UTF-8 reading (statefulrnn.text.decode)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statefulrnn.text.decode import decode_utf8, read_text


def write(path, content):
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def test_read_text_strict_names_the_byte_offset(tmp_path):
    path = write(tmp_path / "bad.txt", b"hello\nw\xc3\xb6rld \xff!\n")
    with pytest.raises(ValueError) as e:
        read_text(path)
    msg = str(e.value)
    assert str(path) in msg and "byte offset 13" in msg and "line 2" in msg and "0xff" in msg
    assert "replace_invalid=True" in msg and "--replace-invalid" in msg


def test_read_text_replace_invalid(tmp_path):
    path = write(tmp_path / "bad.txt", b"a\xffb\xe2\x82c\xc3")
    assert read_text(path, replace_invalid=True) == "a\ufffdb\ufffdc\ufffd"
    assert decode_utf8(path.read_bytes(), replace_invalid=True) == ("a\ufffdb\ufffdc\ufffd", 3)
    assert decode_utf8("ok \ufffd".encode()) == ("ok \ufffd", 0)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_replacement_matches_python_replace(data):
    text, replaced = decode_utf8(data, replace_invalid=True)
    assert text == data.decode("utf-8", "replace").removeprefix("\ufeff")
    assert replaced == text.count("\ufffd") - data.decode("utf-8", "ignore").count("\ufffd")


def test_read_text_errors_and_bom(tmp_path):
    with pytest.raises(ValueError, match="is empty"):
        read_text(write(tmp_path / "empty.txt", b""))
    with pytest.raises(FileNotFoundError):
        read_text(tmp_path / "missing.txt")
    with pytest.raises(IsADirectoryError):
        read_text(tmp_path)
    assert read_text(write(tmp_path / "bom.txt", b"\xef\xbb\xbfhi\r\n")) == "hi\r\n"
