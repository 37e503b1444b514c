"""The `statefulrnn.text` package: its public names, the lazy trainer, and the temporary shims."""

from __future__ import annotations

import subprocess
import sys

import pytest

import statefulrnn.text as text


def test_package_exposes_the_public_names():
    from statefulrnn.text import corpus, decode, prepare, tokens, vocab

    assert text.Vocab is vocab.Vocab and text.UnknownTokenError is vocab.UnknownTokenError
    assert text.tokenize is tokens.tokenize and (text.EOS, text.UNK) == (tokens.EOS, tokens.UNK)
    assert text.decode_utf8 is decode.decode_utf8 and text.read_text is decode.read_text
    assert text.Corpus is corpus.Corpus and text.text_corpus is corpus.text_corpus
    assert text.load_corpus is corpus.load_corpus and text.prepare_text is prepare.prepare_text
    assert {"train_text", "evaluate_text", "load_text_run", "tokenize"} <= set(text.__all__) <= set(dir(text))


def test_importing_the_package_does_not_import_the_trainer():
    code = (
        "import sys, statefulrnn.text as t; "
        "assert not {'statefulrnn.train', 'statefulrnn.distributed'} & set(sys.modules); "
        "t.train_text; assert 'statefulrnn.train' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lm_names_load_on_first_use():
    from statefulrnn.text import lm

    assert text.train_text is lm.train_text and text.evaluate_text is lm.evaluate_text
    assert text.load_text_run is lm.load_text_run
    with pytest.raises(AttributeError, match="no_such_name"):
        text.no_such_name  # noqa: B018
