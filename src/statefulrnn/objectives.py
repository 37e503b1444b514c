"""What a model is trained to minimise, and the metrics reported with it.

An objective turns (outputs, targets, mask) into a summed loss and a count, so that a loss
averaged over many batches weights every real step equally, whatever the padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class Objective:
    """Summed loss and metric sums over the real (mask=True) steps of a batch."""

    name = "objective"

    def sums(self, outputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return {"loss": sum, "count": n, ...other sums}; `loss / count` is what is minimised."""
        raise NotImplementedError

    def report(self, totals: dict[str, float]) -> dict[str, float]:
        """Turn accumulated sums into the metrics shown to the user."""
        raise NotImplementedError


class NextToken(Objective):
    """Cross-entropy over token ids; reports loss (nats/token), accuracy, bits/token, perplexity."""

    name = "next-token"

    def __init__(self, level: str = "char") -> None:
        self.level = level

    def sums(self, outputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = outputs.reshape(-1, outputs.shape[-1])
        targets = targets.reshape(-1).long()
        mask = mask.reshape(-1)
        if bool(mask.all()):
            loss = F.cross_entropy(logits, targets, reduction="sum")
            count = torch.tensor(float(targets.numel()), device=logits.device)
            correct = (logits.argmax(-1) == targets).sum()
        else:
            losses = F.cross_entropy(logits, targets, reduction="none")
            weight = mask.to(losses.dtype)
            loss = (losses * weight).sum()
            count = weight.sum()
            correct = ((logits.argmax(-1) == targets) & mask).sum()
        return {"loss": loss, "count": count, "correct": correct.to(loss.dtype)}

    def report(self, totals: dict[str, float]) -> dict[str, float]:
        n = max(totals.get("count", 0.0), 1.0)
        loss = totals["loss"] / n
        out = {"loss": loss, "accuracy": totals["correct"] / n}
        if self.level == "char":
            out["bpc"] = loss / math.log(2)
        else:
            out["perplexity"] = math.exp(min(loss, 50.0))
        return out


class Regression(Objective):
    """Mean squared error over the finite target entries (NaN targets are missing, not zero)."""

    name = "mse"

    def sums(self, outputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        targets = targets.to(outputs.dtype)
        if targets.dim() == outputs.dim() - 1:
            targets = targets.unsqueeze(-1)
        valid = torch.isfinite(targets) & mask.unsqueeze(-1)
        diff = torch.where(valid, outputs - torch.nan_to_num(targets), torch.zeros((), dtype=outputs.dtype))
        weight = valid.to(outputs.dtype)
        return {"loss": (diff * diff).sum(), "count": weight.sum(), "abs": diff.abs().sum()}

    def report(self, totals: dict[str, float]) -> dict[str, float]:
        n = max(totals.get("count", 0.0), 1.0)
        return {"loss": totals["loss"] / n, "mae": totals["abs"] / n}
