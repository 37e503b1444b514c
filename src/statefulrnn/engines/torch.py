"""PyTorch engine: `SequenceModel` in inference mode; oneDNN's RNN path off for small CPU batches.

On CPU, torch's fused RNN kernel goes through oneDNN by default. For the short calls of live streams
(a step or a few) it costs more than it saves: bench/step_latency.py measures the crossover, which
`use_onednn` encodes. Long calls (warming a state on a history, big batches) keep it. On GPU, cuDNN.
The flag is toggled through `torch.backends.mkldnn.enabled` (~0.5 µs) rather than
`torch.backends.mkldnn.flags()` (~10 µs, and it resets the other oneDNN flags while it is active). The
flag is process-wide, so the blocks that toggle it take turns: unguarded, two threads stepping at once
could leave oneDNN off for the whole process (slower training, and no bf16 autocast of the LSTM).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ..model import SequenceModel
from ..runs import load_model
from ..state import State

ONEDNN_MIN_WORK = 256  # lanes x steps per call
ONEDNN_MIN_STEPS = 32


def use_onednn(lanes: int, steps: int) -> bool:
    """Whether oneDNN's RNN kernel is faster than torch's own for a CPU call of `lanes` x `steps`.

    Measured with bench/step_latency.py --grid (1 thread, 2 shared cores): off is 2.4x faster for one
    step of one lane; from ~16 to ~128 lane-steps the two are within ~15%; on is 10-40% faster from
    256 lane-steps, or from ~32 steps.
    """
    return lanes * steps >= ONEDNN_MIN_WORK or steps >= ONEDNN_MIN_STEPS


_ONEDNN_FLAG = threading.RLock()


@contextmanager
def onednn(enabled: bool) -> Iterator[None]:
    """Turn oneDNN on or off for the duration of the block (one thread's block at a time)."""
    flags = torch.backends.mkldnn
    with _ONEDNN_FLAG:
        before = flags.enabled
        flags.enabled = enabled
        try:
            yield
        finally:
            flags.enabled = before


class TorchEngine:
    """Steps a `SequenceModel` with PyTorch on its own device; tensors in and out are on the CPU.

    `onednn`: None picks per call with `use_onednn`; True or False forces it (CPU only).
    """

    name = "torch"

    def __init__(self, model: SequenceModel, *, onednn: bool | None = None) -> None:
        self.model = model.eval()
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.onednn = onednn

    @classmethod
    def from_source(cls, run: str | Path | SequenceModel, device: str | torch.device = "cpu") -> TorchEngine:
        """An engine for a `SequenceModel` (kept on its device) or a run directory (loaded onto `device`)."""
        model = run if isinstance(run, SequenceModel) else load_model(Path(run), device)[0]
        return cls(model)

    def initial_state(self, lanes: int) -> State:
        return State.zeros(self.model.cell, self.model.num_layers, lanes, self.model.hidden_size)

    @torch.inference_mode()
    def step(self, state: State, inputs: torch.Tensor) -> tuple[torch.Tensor, State]:
        inputs = torch.as_tensor(inputs)
        lanes, steps = inputs.shape[:2]
        if steps == 0:
            return torch.empty(lanes, 0, self.model.n_outputs), state
        x = inputs.to(self.device) if not inputs.is_floating_point() else inputs.to(self.device, self.dtype)
        hx = state.to(self.device, self.dtype)
        if self.device.type == "cpu":
            with onednn(use_onednn(lanes, steps) if self.onednn is None else self.onednn):
                outputs, new = self.model(x, hx)
        else:
            outputs, new = self.model(x, hx)
        return outputs.float().cpu(), new.to("cpu", torch.float32)
