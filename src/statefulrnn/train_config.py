"""TrainConfig: every training setting with its default (the CLI reads its defaults from here), and
the rule for what a resumed run may change."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from .precision import PRECISIONS

SCHEDULES = ("wsd", "cosine", "step", "constant")
"""The learning-rate schedules, the default first (see `TrainConfig.schedule`)."""


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
        schedule: the learning rate against the share of the budget spent (`SCHEDULES`), after
            `warmup` steps of linear warm-up. "wsd" (warm-up, stable, decay; the default): the peak rate
            until the last `decay_fraction` of the budget, then linearly down to `min_lr` x lr at its end.
            It is good at every budget: a short run is not spent at a reduced rate, and a finished run
            extended on resume (more epochs, time or tokens) returns to the peak rate and decays again
            before its new end. "cosine" (the default until issue 16): from lr to `min_lr` x lr along a half
            cosine over the whole budget; it spends much of a short budget at reduced rates (0.19-0.27
            bpc behind wsd at 60-180 s in bench/text_defaults.py). "step": x `gamma` every `step_epochs`
            epochs. "constant": the peak rate throughout (the plain loop's schedule).
            The budget is whichever ends the run first: `epochs`, `max_tokens` or `max_time`; under a
            time budget the decay follows elapsed training time (saved in the checkpoint, so resume
            continues the same schedule). `patience` does not move it.
        warmup: steps of linear warm-up from lr / warmup to lr (0: none; the ramp caps any schedule).
            0 by default: on tinyshakespeare's validation split 100 warm-up steps cost 0.20 nats/char at a
            0.5 M-token budget and 0.04 at 2 M (one seed each; bench/text_defaults.py --kind tokens).
        decay_fraction: "wsd": the final share of the budget spent decaying (0 < x <= 1). 0.1 by default:
            on that validation split 0.1 beat 0.2 and 0.4 at both budgets (1.640 vs 1.645 and 1.663
            nats/char at 2 M tokens, where the constant rate had 1.654; at 0.5 M, 2.076 vs 2.091, 2.128,
            and 2.069 constant: so early in training any decay costs a little).
        min_lr: "wsd" and "cosine": the rate at the end of the budget, as a fraction of lr.
        burn_in: stateless mode only: steps before each window run without gradient to warm its state.
        patience: stop after this many evaluations without a better validation loss (None: never).
        eval_every: also evaluate validation every this many seconds of training within an epoch (None:
            at the end of each epoch only). Each evaluation can become the best weights; its time counts
            towards `max_time`. For long epochs (a big book, a slow cell) and curves against wall time.
        seed: seeds weights, dropout and shuffling; on CPU a run is reproducible bit for bit, except
            under `max_time`, where the stopping point and the wsd/cosine decay follow the clock.
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
    schedule: str = "wsd"
    warmup: int = 0
    decay_fraction: float = 0.1
    min_lr: float = 0.1
    gamma: float = 0.5
    step_epochs: int = 1
    burn_in: int = 0
    patience: int | None = None
    seed: int = 0
    max_time: float | None = None
    max_tokens: int | None = None
    eval_every: float | None = None
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
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be 0 or more steps, got {self.warmup}")
        if not 0 < self.decay_fraction <= 1:
            raise ValueError(f"decay_fraction must be in (0, 1], got {self.decay_fraction}")
        if not 0 <= self.min_lr <= 1:
            raise ValueError(f"min_lr is a fraction of lr and must be in [0, 1], got {self.min_lr}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be fp32, bf16 or auto, got {self.precision!r}")
        for name in ("lanes", "window", "epochs", "eval_lanes", "eval_window", "log_every", "step_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.eval_every is not None and self.eval_every <= 0:
            raise ValueError(f"eval_every must be positive seconds, got {self.eval_every}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.burn_in < 0 or (self.burn_in and self.mode == "stateful"):
            raise ValueError("burn_in is for stateless mode only (stateful mode carries the real state)")


def budget_spent(config: TrainConfig, step: int, tokens: int, elapsed: float, total_steps: int) -> float:
    """The share of the budget spent by global step `step` (0..1), which the schedules follow: the largest of
    the step budget (`total_steps`, counted with this step done), the token budget and the time budget (both
    counted before this step, the only amounts known then). So a run decays towards whichever ends it first."""
    spent = (step + 1) / max(total_steps, 1)
    if config.max_tokens is not None:
        spent = max(spent, tokens / max(config.max_tokens, 1))
    if config.max_time is not None:
        spent = max(spent, elapsed / config.max_time if config.max_time > 0 else 1.0)
    return min(spent, 1.0)


def learning_rate(
    config: TrainConfig, step: int, tokens: int, elapsed: float, total_steps: int, steps_per_epoch: int
) -> float:
    """The learning rate of global step `step`, after `tokens` training tokens and `elapsed` seconds of training,
    in a run of `total_steps` (= epochs x `steps_per_epoch`) steps: `config.schedule` capped by the warm-up ramp."""
    c = config
    ramp = (step + 1) / c.warmup if step < c.warmup else 1.0
    if c.schedule == "constant":
        shape = 1.0
    elif c.schedule == "step":
        shape = c.gamma ** ((step // max(steps_per_epoch, 1)) // c.step_epochs)
    else:
        p = budget_spent(c, step, tokens, elapsed, total_steps)
        if c.schedule == "cosine":
            rest = 0.5 * (1 + math.cos(math.pi * p))  # the share of the fall still to come, 1 -> 0
        else:  # wsd: stable, then a straight fall over the last decay_fraction of the budget
            rest = (1 - p) / c.decay_fraction
        shape = 1.0 if rest >= 1 else c.min_lr + (1 - c.min_lr) * rest
    return c.lr * min(ramp, shape)


RESUMABLE = ("epochs", "max_time", "max_tokens", "patience", "eval_every")


def resumed_config(saved: dict[str, Any], overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The `TrainConfig` saved in a run's config.json, with the budgets a resume may change applied."""
    known = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in saved["train"].items() if k in known})
    for k, v in (overrides or {}).items():
        if k not in RESUMABLE:
            raise ValueError(f"{k} cannot change when resuming; only {', '.join(RESUMABLE)} can")
        setattr(config, k, v)
    return config
