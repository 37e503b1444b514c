"""Sampling: the distribution each draw comes from (temperature, top_k, top_p), the draws themselves,
robustness at the edges (tiny top_p, tiny temperature, infinite logits) and seeded generation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from statefulrnn.model import SequenceModel
from statefulrnn.text import Vocab
from statefulrnn.text.generate import generate, sample, sampling_probs

INF = math.inf


def _logits(probs) -> torch.Tensor:
    """float64 logits whose softmax is `probs` (to float64 rounding)."""
    return torch.tensor(np.log(probs), dtype=torch.float64)


def _probs(logits, **options) -> np.ndarray:
    x = logits if torch.is_tensor(logits) else torch.tensor(logits, dtype=torch.float64)
    return sampling_probs(x, **options).numpy()


def _kept(logits, **options) -> list[int]:
    return np.flatnonzero(_probs(logits, **options)).tolist()


# --- temperature ------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [0.05, 0.5, 1.0, 1.7, 25.0])
def test_temperature_gives_softmax_of_the_scaled_logits(temperature):
    logits = torch.tensor([2.0, -1.0, 0.5, 3.25, 0.0, -7.0], dtype=torch.float64)
    expected = torch.softmax(logits / temperature, dim=0).numpy()
    np.testing.assert_allclose(_probs(logits, temperature=temperature), expected, rtol=1e-12, atol=1e-300)


def test_float32_logits_give_the_same_distribution_as_float64():
    logits = torch.tensor([2.0, -1.0, 0.5, 3.25], dtype=torch.float32)
    expected = torch.softmax(logits.double() / 0.8, dim=0).numpy()
    np.testing.assert_allclose(_probs(logits, temperature=0.8), expected, rtol=1e-12)


def test_temperature_zero_puts_all_mass_on_the_argmax():
    assert _probs([0.1, 2.0, -3.0, 1.9], temperature=0).tolist() == [0.0, 1.0, 0.0, 0.0]
    assert _probs([1.0, 5.0, 5.0], temperature=0).tolist() == [0.0, 1.0, 0.0]  # ties: the lower id


@pytest.mark.parametrize("temperature", [1e-30, 1e-300, 5e-324])
def test_a_tiny_temperature_is_greedy_without_overflow(temperature):
    logits = torch.tensor([1e30, -1e30, 3e30, 2.9e30, -INF], dtype=torch.float32)
    assert _probs(logits, temperature=temperature).tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert _probs([1.0, 1.0 + 1e-12, 0.5], temperature=temperature).tolist() == [0.0, 1.0, 0.0]


def test_a_tiny_temperature_splits_the_mass_between_tied_maxima():
    assert _probs([3.0, -2.0, 3.0], temperature=1e-30).tolist() == [0.5, 0.0, 0.5]


def test_equal_logits_are_uniform_at_any_temperature():
    for temperature in (1e-30, 0.3, 1.0, 100.0):
        np.testing.assert_allclose(_probs([4.0] * 5, temperature=temperature), [0.2] * 5, rtol=1e-15)


def test_infinite_logits():
    assert _probs([-INF, 0.0, -INF]).tolist() == [0.0, 1.0, 0.0]
    np.testing.assert_allclose(_probs([-INF] * 4), [0.25] * 4)  # nothing preferred: uniform
    assert _probs([1.0, INF, 3.0, INF]).tolist() == [0.0, 0.5, 0.0, 0.5]  # +inf takes all the mass
    assert _probs([-INF] * 4, top_k=1).tolist() == [1.0, 0.0, 0.0, 0.0]


# --- top_k ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_top_k_keeps_exactly_the_k_most_likely_and_renormalises(k):
    logits = torch.tensor([0.3, 2.0, -1.0, 1.5, 0.9, -0.2], dtype=torch.float64)
    base = torch.softmax(logits, 0).numpy()
    top = np.argsort(-base)[:k]
    expected = np.zeros_like(base)
    expected[top] = base[top] / base[top].sum()
    np.testing.assert_allclose(_probs(logits, top_k=k), expected, rtol=1e-12)


def test_top_k_keeps_exactly_k_even_among_ties():
    assert _kept([1.0, 2.0, 2.0, 2.0, 0.0], top_k=2) == [1, 2]
    np.testing.assert_allclose(_probs([1.0, 2.0, 2.0, 2.0, 0.0], top_k=2), [0, 0.5, 0.5, 0, 0])


def test_top_k_larger_than_the_vocabulary_changes_nothing():
    logits = [0.1, 0.7, -0.4]
    np.testing.assert_array_equal(_probs(logits, top_k=50), _probs(logits))


# --- top_p ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("top_p", "kept"),
    [(0.3, [0]), (0.5, [0]), (0.51, [0, 1]), (0.8, [0, 1]), (0.81, [0, 1, 2]), (1.0, [0, 1, 2])],
)
def test_top_p_keeps_the_smallest_set_whose_mass_reaches_p(top_p, kept):
    logits = _logits([0.5, 0.3, 0.2])
    probs = _probs(logits, top_p=top_p)
    assert np.flatnonzero(probs).tolist() == kept
    base = np.array([0.5, 0.3, 0.2])
    np.testing.assert_allclose(probs[kept], base[kept] / base[kept].sum(), rtol=1e-12)


def test_top_p_ranks_by_probability_not_by_id():
    logits = _logits([0.1, 0.2, 0.6, 0.1])
    assert _kept(logits, top_p=0.6) == [2]
    assert _kept(logits, top_p=0.7) == [1, 2]
    assert _kept(logits, top_p=0.85) == [0, 1, 2]  # the tie at 0.1 goes to the lower id


def test_top_p_applies_to_the_renormalised_top_k_distribution():
    logits = _logits([0.4, 0.3, 0.2, 0.1])
    assert _kept(logits, top_p=0.5) == [0, 1]  # 0.4 alone does not reach 0.5
    np.testing.assert_allclose(_probs(logits, top_k=2), [4 / 7, 3 / 7, 0, 0], rtol=1e-12)
    assert _kept(logits, top_k=2, top_p=0.5) == [0]  # but 4/7 does


@pytest.mark.parametrize("top_p", [1e-5, 1e-30, 1.4e-45, 1e-46, 1e-300, 5e-324])
def test_a_tiny_top_p_is_greedy(top_p):
    logits = torch.tensor([0.2, 1.0, 3.0, 2.0], dtype=torch.float32)
    assert _probs(logits, top_p=top_p).tolist() == [0.0, 0.0, 1.0, 0.0]
    generator = torch.Generator().manual_seed(0)
    assert [sample(logits, top_p=top_p, generator=generator) for _ in range(20)] == [2] * 20


def test_top_p_on_equal_logits_keeps_enough_of_them():
    assert _kept([0.0] * 4, top_p=0.5) == [0, 1]
    assert _kept([0.0] * 4, top_p=0.51) == [0, 1, 2]
    assert _kept([-INF] * 4, top_p=1e-46) == [0]


# --- argument checks ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"temperature": INF}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 1.5}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.01}, "top_p"),
        ({"top_p": math.nan}, "top_p"),
        ({"top_p": -1e-300}, "top_p"),
    ],
)
def test_out_of_range_options_are_a_clear_value_error(options, match):
    with pytest.raises(ValueError, match=match):
        sampling_probs(torch.zeros(4), **options)
    with pytest.raises(ValueError, match=match):
        sample(torch.zeros(4), **options)


@pytest.mark.parametrize(
    ("logits", "match"),
    [(torch.tensor([0.0, math.nan]), "NaN"), (torch.zeros(0), "non-empty"), (torch.zeros(2, 3), "vector")],
)
def test_bad_logits_are_a_clear_value_error(logits, match):
    with pytest.raises(ValueError, match=match):
        sample(logits)


# --- any input: a valid distribution ---------------------------------------------------------------
_logit = st.one_of(
    st.floats(-1e4, 1e4, width=32),
    st.floats(width=32, allow_nan=False),  # any float32: huge, subnormal, infinite
    st.sampled_from([-INF, INF, 0.0]),
)


@settings(max_examples=300, deadline=None)
@given(
    logits=st.lists(_logit, min_size=1, max_size=12),
    temperature=st.one_of(st.just(0.0), st.sampled_from([5e-324, 1e-300, 1e-30]), st.floats(1e-6, 1e3), st.just(1e300)),
    top_k=st.one_of(st.none(), st.integers(1, 14)),
    top_p=st.one_of(st.none(), st.sampled_from([5e-324, 1e-46, 1.0]), st.floats(1e-9, 1.0)),
    seed=st.integers(0, 2**31),
)
def test_every_accepted_input_gives_a_valid_distribution_inside_the_top_k(logits, temperature, top_k, top_p, seed):
    x = torch.tensor(logits, dtype=torch.float32)
    probs = _probs(x, temperature=temperature, top_k=top_k, top_p=top_p)
    assert np.isfinite(probs).all() and (probs >= 0).all()
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)
    kept = np.flatnonzero(probs)
    values = x.double().numpy()
    k = len(values) if top_k is None else min(top_k, len(values))
    assert 1 <= len(kept) <= k
    assert values[kept].min() >= np.sort(values)[::-1][k - 1]  # support within the k largest logits
    assert values.max() in values[kept]  # the most likely token is always kept
    token = sample(x, temperature=temperature, top_k=top_k, top_p=top_p, generator=torch.Generator().manual_seed(seed))
    assert probs[token] > 0


@settings(max_examples=200, deadline=None)
@given(
    logits=st.lists(st.floats(-30, 30), min_size=2, max_size=10, unique=True),
    temperature=st.floats(0.05, 5.0),
    top_p=st.floats(1e-6, 1.0),
)
def test_top_p_set_is_the_smallest_whose_mass_reaches_p(logits, temperature, top_p):
    x = torch.tensor(logits, dtype=torch.float64)
    base = torch.softmax(x / temperature, 0).numpy()
    kept = np.flatnonzero(_probs(x, temperature=temperature, top_p=top_p))
    dropped = np.setdiff1d(np.arange(len(logits)), kept)
    if len(dropped):
        assert base[kept].min() >= base[dropped].max()  # the most likely first
        assert base[kept].sum() >= top_p - 1e-9  # reaches p
    smaller = base[kept].sum() - base[kept].min()
    assert len(kept) == 1 or smaller < top_p + 1e-9  # and no smaller most-likely set does


# --- the draws ----------------------------------------------------------------------------------------
def _counts(logits, n: int, seed: int, **options) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    draws = [sample(logits, generator=generator, **options) for _ in range(n)]
    return np.bincount(draws, minlength=len(logits))


def _within_binomial_error(counts: np.ndarray, probs: np.ndarray, sigmas: float = 6.0) -> bool:
    """Every count within `sigmas` binomial standard errors of n * p (and none where p is 0)."""
    n = counts.sum()
    sd = np.sqrt(n * probs * (1 - probs))
    return bool((np.abs(counts - n * probs) <= sigmas * sd).all() and (counts[probs == 0] == 0).all())


@pytest.mark.parametrize(
    "options",
    [{}, {"temperature": 0.6}, {"temperature": 2.0, "top_k": 4}, {"top_p": 0.75}, {"top_k": 5, "top_p": 0.9}],
)
def test_seeded_draws_follow_the_sampling_distribution(options):
    logits = torch.tensor([1.2, 0.3, -0.5, 2.0, 0.9, -1.5], dtype=torch.float32)
    probs = _probs(logits, **options)
    counts = _counts(logits, 6000, seed=11, **options)
    assert _within_binomial_error(counts, probs)
    if options:  # the check has the power to tell the filtered distribution from the plain softmax
        assert not _within_binomial_error(counts, _probs(logits))


def test_the_same_generator_seed_gives_the_same_draws():
    logits = torch.randn(50, generator=torch.Generator().manual_seed(0))
    a, b, c = (_counts(logits, 200, seed=s, temperature=1.3) for s in (5, 5, 6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# --- generate ------------------------------------------------------------------------------------------
TEXT = "the quick brown fox jumps over the lazy dog\nsphinx of black quartz, judge my vow\n"


@pytest.fixture(scope="module")
def char_model() -> tuple[SequenceModel, Vocab]:
    vocab = Vocab.build(TEXT)
    torch.manual_seed(0)
    model = SequenceModel("lstm", vocab_size=len(vocab), hidden_size=16, num_layers=1, embedding_dim=8)
    with torch.no_grad():
        model.head.weight.mul_(20)  # peaked, varied next-token distributions
    return model, vocab


def test_generate_with_the_same_seed_repeats_and_another_seed_differs(char_model):
    model, vocab = char_model

    def text(seed: int | None, **options) -> str:
        return "".join(generate(model, vocab, "the ", 40, seed=seed, **options))

    assert text(3) == text(3)
    assert text(3) != text(4)
    assert text(3, top_k=3, top_p=0.9, temperature=0.7) == text(3, top_k=3, top_p=0.9, temperature=0.7)
    assert text(None, top_p=1e-46) == text(7, temperature=0)  # a tiny top_p is greedy


def test_generate_draws_each_token_from_the_model_distribution_with_the_seeded_generator(char_model):
    model, vocab = char_model
    options = {"temperature": 0.8, "top_k": 6, "top_p": 0.95}
    got = list(generate(model, vocab, "ox", 25, seed=9, **options))
    generator = torch.Generator().manual_seed(9)
    ids = [vocab.id_of(c) for c in "ox"]
    expected = []
    with torch.no_grad():
        for _ in range(25):
            logits = model(torch.tensor([ids]))[0][0, -1]
            token = sample(logits, generator=generator, **options)
            expected.append(vocab.tokens[token])
            ids.append(token)
    assert got == expected


def test_generate_at_temperature_zero_is_greedy_decoding(char_model):
    model, vocab = char_model
    got = "".join(generate(model, vocab, "ju", 20, temperature=0))
    ids = [vocab.id_of(c) for c in "ju"]
    with torch.no_grad():
        for _ in range(20):
            ids.append(int(model(torch.tensor([ids]))[0][0, -1].argmax()))
    assert got == "".join(vocab.tokens[i] for i in ids[2:])
