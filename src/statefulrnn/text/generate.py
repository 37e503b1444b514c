"""Sampling text from a carried state: the prompt warms the state in one fused call, then one token at a time."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator

import torch

from ..model import SequenceModel
from .vocab import Vocab, tokenize

TOP_P_TOLERANCE = 1e-12
"""Cumulative mass within this of `top_p` counts as reaching it (float64 sums of many terms round)."""


def _check_options(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not (isinstance(temperature, numbers.Real) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None and (not isinstance(top_k, numbers.Integral) or top_k < 1):
        raise ValueError(f"top_k must be an integer of at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:  # also rejects NaN
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def sampling_probs(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """The (vocab,) float64 distribution `sample` draws from, for (vocab,) logits.

    The base distribution is softmax(logits / temperature), computed shifted by the maximum so
    that no temperature overflows: temperature 0 puts all mass on the first argmax; +inf logits
    share the mass equally; all -inf logits (nothing preferred) give the uniform distribution.
    `top_k` then keeps exactly the k most likely tokens (ties: the lower id) and renormalises;
    `top_p` then keeps the smallest most-likely-first set whose mass reaches `top_p` (always at
    least the most likely token, so a tiny `top_p` is greedy) and renormalises.

    Raises ValueError for an out-of-range option, logits that are not a non-empty vector, or NaN logits.
    """
    _check_options(temperature, top_k, top_p)
    x = torch.as_tensor(logits).detach().to("cpu", torch.float64)
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError(f"logits must be a non-empty (vocab,) vector, got shape {tuple(x.shape)}")
    if torch.isnan(x).any():
        raise ValueError("the logits contain NaN: the model's weights or inputs are broken")
    top = float(x.max())
    if temperature == 0:
        probs = torch.zeros_like(x)
        probs[x.argmax()] = 1.0  # the first maximum
    elif top == math.inf:
        probs = (x == top).to(torch.float64)
    elif top == -math.inf:
        probs = torch.ones_like(x)
    else:
        probs = torch.exp((x - top) / temperature)  # <= 1, and exactly 1 at the maximum: no overflow, no NaN
    probs = probs / probs.sum()
    cut_k = top_k is not None and top_k < len(x)
    cut_p = top_p is not None and top_p < 1
    if not (cut_k or cut_p):
        return probs
    order = torch.sort(x, descending=True, stable=True).indices  # most likely first, ties by lower id
    p = probs[order]
    if cut_k:
        p[top_k:] = 0.0
        p = p / p.sum()
    if cut_p:
        before = torch.cat([p.new_zeros(1), torch.cumsum(p, 0)[:-1]])  # the mass of the more likely tokens
        drop = before >= top_p - TOP_P_TOLERANCE
        drop[0] = False
        p = p.masked_fill(drop, 0.0)
        p = p / p.sum()
    probs = torch.empty_like(p)
    probs[order] = p
    return probs


def sample(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """Draw one token id from (vocab,) logits; temperature 0 means greedy (argmax).

    The draw is from `sampling_probs(logits, temperature, top_k, top_p)` by inverse CDF with one
    uniform from `generator`, so a token of probability 0 is never drawn.
    """
    probs = sampling_probs(logits, temperature, top_k, top_p)
    support = torch.nonzero(probs).flatten()
    if len(support) == 1:
        return int(support[0])
    cdf = torch.cumsum(probs, 0)
    u = torch.rand((), generator=generator, dtype=torch.float64) * cdf[-1]
    token = int(torch.searchsorted(cdf, u, right=True))
    return min(token, int(support[-1]))


def prompt_ids(vocab: Vocab, prompt: str) -> list[int]:
    """Token ids of a prompt; a token the model never saw is a user error, not a silent <unk>."""
    pieces = tokenize(prompt, vocab.level)
    known = set(vocab.tokens)
    unknown = sorted({p for p in pieces if p not in known})
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:10])
        raise ValueError(f"the prompt has tokens the model's vocabulary lacks: {shown}; remove or replace them")
    return [vocab.id_of(p) for p in pieces]


@torch.no_grad()
def generate(
    model: SequenceModel,
    vocab: Vocab,
    prompt: str,
    n: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
) -> Iterator[str]:
    """Yield `n` sampled tokens as text pieces, each as soon as it is drawn (same seed, same text)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    ids = prompt_ids(vocab, prompt) if prompt else [vocab.id_of("\n" if vocab.level == "char" else "<eos>")]
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    model.eval()
    out, state = model(torch.tensor([ids], device=device))
    logits = out[0, -1]
    sep = "" if vocab.level == "char" else " "
    for _ in range(n):
        token = sample(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
        text = vocab.tokens[token]
        yield "\n" if text == "<eos>" else text + sep
        out, state = model(torch.tensor([[token]], device=device), state)
        logits = out[0, -1]
