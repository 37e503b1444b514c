"""Sampling text from a carried state: the prompt warms the state in one fused call, then one token at a time."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .model import SequenceModel
from .text import Vocab


def sample(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """Draw one token id from (vocab,) logits; temperature 0 means greedy (argmax)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    logits = logits.detach().float().cpu()
    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k is not None and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        ordered, index = torch.sort(logits, descending=True)
        cumulative = torch.softmax(ordered, dim=-1).cumsum(-1)
        drop = cumulative - torch.softmax(ordered, dim=-1) >= top_p  # keep the smallest set reaching top_p
        logits = logits.index_fill(0, index[drop], float("-inf"))
    return int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))


def prompt_ids(vocab: Vocab, prompt: str) -> list[int]:
    """Token ids of a prompt; a token the model never saw is a user error, not a silent <unk>."""
    pieces = list(prompt) if vocab.level == "char" else prompt.replace("\n", " <eos> ").split()
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
