"""TrainConfig: every training setting with its default (the CLI reads its defaults from here), and
the rule for what a resumed run may change."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from .precision import PRECISIONS


@dataclass
class TrainConfig:
    """Training settings (saved in the run's config.json).

    Attributes:
        mode: "stateful" (state carried across windows) or "stateless" (every window from zero).
        lanes: parallel lanes (stateful) or windows per batch (stateless): the batch size.
        window: steps per window, the truncated-BPTT length.
        epochs: passes over the training data.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW's decoupled weight decay.
        clip: maximum global gradient norm (0 disables clipping).
        schedule: "cosine" (to `min_lr` x lr at the last step), "step" (x `gamma` every
            `step_epochs` epochs) or "constant"; all after `warmup` steps of linear warm-up.
        burn_in: stateless mode only: steps before each window run without gradient to warm its state.
        patience: stop after this many evaluations without a better validation loss (None: never).
        seed: seeds weights, dropout and shuffling; on CPU a run is reproducible bit for bit.
        max_time: stop after this many seconds of training (None: no limit).
        max_tokens: stop after this many training tokens (None: no limit).
        eval_lanes / eval_window: the layout of the validation stream (does not change the result
            except through how many lanes start cold; keep it fixed to compare runs).
        checkpoint_every: seconds between training checkpoints (0: after every step).
        log_every: steps between lines in metrics.jsonl and progress-bar updates.
        reset_at_boundaries: reset the state where a new document or series starts.
        shuffle: reorder whole documents between epochs (stateful mode; each stays contiguous).
        precision: "fp32", "bf16" or "auto". bf16: the training forward pass runs under bfloat16
            autocast while weights, optimizer, loss, carried state and evaluation stay float32. On CPUs
            with native bfloat16 (AVX512-BF16, AMX) and recent GPUs it trains about 1.7x faster
            (BENCHMARKS.md); where the device cannot run the cell in bf16 the `Trainer` refuses it.
            auto: bf16 where it is native and measured faster, else fp32 (see `precision.py`). The
            `Trainer` resolves it once; the run records and resumes with the resolved fp32 or bf16.
            Trained results differ from fp32 at bfloat16 rounding.
    """

    mode: str = "stateful"
    lanes: int = 64
    window: int = 64
    epochs: int = 10
    lr: float = 2e-3
    weight_decay: float = 0.01
    clip: float = 1.0
    schedule: str = "cosine"
    warmup: int = 0
    min_lr: float = 0.1
    gamma: float = 0.5
    step_epochs: int = 1
    burn_in: int = 0
    patience: int | None = None
    seed: int = 0
    max_time: float | None = None
    max_tokens: int | None = None
    eval_lanes: int = 8
    eval_window: int = 256
    checkpoint_every: float = 60.0
    log_every: int = 20
    reset_at_boundaries: bool = True
    shuffle: bool = False
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.mode not in ("stateful", "stateless"):
            raise ValueError(f"mode must be 'stateful' or 'stateless', got {self.mode!r}")
        if self.schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"schedule must be cosine, step or constant, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be fp32, bf16 or auto, got {self.precision!r}")
        for name in ("lanes", "window", "epochs", "eval_lanes", "eval_window", "log_every", "step_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.burn_in < 0 or (self.burn_in and self.mode == "stateful"):
            raise ValueError("burn_in is for stateless mode only (stateful mode carries the real state)")


RESUMABLE = ("epochs", "max_time", "max_tokens", "patience")


def resumed_config(saved: dict[str, Any], overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The `TrainConfig` saved in a run's config.json, with the budgets a resume may change applied."""
    known = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in saved["train"].items() if k in known})
    for k, v in (overrides or {}).items():
        if k not in RESUMABLE:
            raise ValueError(f"{k} cannot change when resuming; only {', '.join(RESUMABLE)} can")
        setattr(config, k, v)
    return config
