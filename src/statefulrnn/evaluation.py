"""Stateful evaluation on its own state, and turning a layout's numpy batch into tensors.

Evaluation keeps its own state, laid out in its own lanes: it never reads, resets or replaces the
training state (unlike Keras, where `evaluate` on a stateful model disturbs the training state).
"""

from __future__ import annotations

import numpy as np
import torch

from .distributed import Distributed
from .layout import Batch, Layout
from .model import SequenceModel
from .objectives import Objective
from .state import State


def to_tensors(batch: Batch, device: torch.device, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The arrays of a batch as tensors: token ids as int64, floats in the model dtype; resets stay on CPU."""

    def values(a: np.ndarray) -> torch.Tensor:
        a = np.ascontiguousarray(a)
        if a.dtype.kind in "iu":
            return torch.from_numpy(a.astype(np.int64, copy=False)).to(device)
        return torch.from_numpy(a).to(device, dtype)

    out = {
        "inputs": values(batch.inputs),
        "targets": values(batch.targets),
        "mask": torch.from_numpy(batch.mask).to(device),
    }
    if batch.resets is not None:
        out["resets"] = torch.from_numpy(batch.resets)
    if batch.context is not None:
        out["context"] = values(batch.context)
        out["context_resets"] = torch.from_numpy(batch.context_resets)
    return out


@torch.no_grad()
def evaluate(
    model: SequenceModel,
    layout: Layout,
    objective: Objective,
    device: torch.device | None = None,
    dist: Distributed | None = None,
) -> dict:
    """Evaluation on its own state: a stateful layout's lanes carry it across windows, a stateless
    layout's windows each start from zero (warmed on their context, if any), as in training.
    With `dist`, each rank evaluates its block of lanes and the sums are added over ranks."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    state: State | None = None
    try:
        for batch in layout.batches():
            t = to_tensors(batch if dist is None else dist.shard(batch), device, next(model.parameters()).dtype)
            if not layout.stateful:
                state = model(t["context"], None, t["context_resets"])[1] if "context" in t else None
            out, state = model(t["inputs"], state, t.get("resets"))
            for k, v in objective.sums(out, t["targets"], t["mask"]).items():
                totals[k] = totals.get(k, 0.0) + float(v)
    finally:
        model.train(was_training)
    return objective.report(totals if dist is None else dist.sum_totals(totals))
