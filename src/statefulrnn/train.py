"""Truncated BPTT for stateful and stateless training, stateful evaluation, checkpoints and resume.

Stateful (the default): the batches of a stateful layout are run in order; the state each lane ends
a window with is detached (gradients stop at the window edge) and carried into the next window.
The state is zero at each epoch start and is reset inside a window where a sequence starts.

Stateless: the windows of a `StatelessLayout` are shuffled and each starts from zero state, or
from the state reached by running the `burn_in` steps before it without gradient.

Evaluation keeps its own state, laid out in its own lanes: it never reads, resets or replaces the
training state (unlike Keras, where `evaluate` on a stateful model disturbs the training state).
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint as ckpt
from .distributed import Distributed
from .layout import Batch, ConcatLayout, Layout, PackLayout, Sequences, StatelessLayout
from .model import SequenceModel
from .objectives import Objective
from .state import State

METRICS = "metrics.jsonl"


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
        precision: "fp32", or "bf16": the training forward pass runs under bfloat16 autocast while
            weights, optimizer, loss, carried state and evaluation stay float32. On CPUs with native
            bfloat16 (AVX512-BF16, AMX) and recent GPUs it trains about 1.7x faster (BENCHMARKS.md);
            on CPUs without it, it is slower. Trained results differ from fp32 at bfloat16 rounding.
    """

    mode: str = "stateful"
    lanes: int = 32
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
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {self.precision!r}")
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


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so weights, dropout and shuffling repeat exactly."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str | None = "auto") -> torch.device:
    """'auto' picks CUDA when available, else CPU; anything else is passed to torch.device."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N ({e})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available: use --device cpu or auto")
    return device


def training_layout(
    data: Sequences, config: TrainConfig, *, pack: bool = False, max_length: int | None = None
) -> Layout:
    """The layout `config.mode` asks for: concat (or pack, for separate series) lanes, or stateless windows.

    `max_length` (pack only) cuts long series into pieces, so that a few long series fill many lanes.
    """
    if config.mode == "stateless":
        return StatelessLayout(data, config.lanes, config.window, burn_in=config.burn_in, seed=config.seed)
    if pack:
        return PackLayout(
            data, config.lanes, config.window, max_length=max_length, shuffle=config.shuffle, seed=config.seed
        )
    return ConcatLayout(
        data,
        config.lanes,
        config.window,
        reset_at_boundaries=config.reset_at_boundaries,
        shuffle=config.shuffle,
        seed=config.seed,
    )


def evaluation_layout(data: Sequences, lanes: int = 8, window: int = 256, *, pack: bool = False) -> Layout:
    """A stateful layout for evaluation, shrunk to fit short data (fewer lanes, shorter window)."""
    if pack:
        lanes = min(lanes, int((data.usable > 0).sum()))
        longest = int(data.usable.max())
        return PackLayout(data, max(lanes, 1), min(window, longest))
    total = int(data.usable.sum())
    lanes = max(1, min(lanes, total // 2))
    return ConcatLayout(data, lanes, min(window, total // lanes), reset_at_boundaries=True)


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


class Trainer:
    """Fits a `SequenceModel` on a training layout, evaluating, logging and checkpointing into `run`.

    With `dist` (see `distributed.py`), this process trains its block of the layout's lanes under DDP;
    only rank 0 logs, shows progress and writes files.
    """

    def __init__(
        self,
        model: SequenceModel,
        objective: Objective,
        train: Layout,
        val: Layout | None = None,
        config: TrainConfig | None = None,
        run: Path | str | None = None,
        *,
        device: torch.device | None = None,
        settings: dict[str, Any] | None = None,
        progress: bool = True,
        dist: Distributed | None = None,
    ) -> None:
        self.config = config or TrainConfig()
        self.device = device or next(model.parameters()).device
        self.model = model.to(self.device)
        self.dist = dist
        self.main = dist is None or dist.is_main
        if dist is not None:
            dist.check_lanes(train.lanes)
        self.net = self.model if dist is None else dist.wrap(self.model)
        self.objective = objective
        self.train_layout = train
        self.val_layout = val
        self.run = Path(run) if run is not None else None
        self.settings = settings or {}
        self.progress = progress and self.main
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)
        self.total_steps = self.config.epochs * len(train)
        self.cursor = {"epoch": 0, "batch": 0, "step": 0, "tokens": 0, "elapsed": 0.0}
        self.best: dict[str, Any] = {"loss": math.inf, "epoch": None, "metrics": None, "bad": 0}
        self.epoch_totals: dict[str, float] = {}
        self._running: dict[str, torch.Tensor] = {}
        self.state: State | None = None

    # --- learning rate -------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """The learning rate of global step `step` (a pure function, so resume needs no scheduler state)."""
        c = self.config
        if step < c.warmup:
            return c.lr * (step + 1) / c.warmup
        if c.schedule == "constant":
            return c.lr
        if c.schedule == "step":
            return c.lr * c.gamma ** ((step // max(len(self.train_layout), 1)) // c.step_epochs)
        progress = min(1.0, (step - c.warmup) / max(1, self.total_steps - c.warmup))
        return c.lr * (c.min_lr + (1 - c.min_lr) * 0.5 * (1 + math.cos(math.pi * progress)))

    # --- one step ------------------------------------------------------------------------------
    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Forward, backward and update on one batch; carries the detached state in stateful mode.
        Returns the objective sums (of all ranks, in a distributed run)."""
        if self.dist is not None:
            batch = self.dist.shard(batch)
            if getattr(self.model, "dropout", 0):
                self.dist.seed_step(self.config.seed, self.cursor["step"])
        dtype = next(self.model.parameters()).dtype
        t = to_tensors(batch, self.device, dtype)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.config.precision == "bf16"):
            if self.train_layout.stateful:
                out, state = self.net(t["inputs"], self.state, t.get("resets"))
                self.state = state.detach().to(dtype=dtype)
            else:
                start = None
                if "context" in t:
                    with torch.no_grad():
                        _, start = self.model(t["context"], None, t["context_resets"])
                out, _ = self.net(t["inputs"], start, t.get("resets"))
        sums = self.objective.sums(out.to(dtype), t["targets"], t["mask"])
        if self.dist is None:
            loss = sums["loss"] / sums["count"].clamp_min(1.0)
            totals = {k: v.detach() for k, v in sums.items()}
        else:
            totals = self.dist.all_reduce_sums(sums)
            loss = self.dist.local_loss(sums["loss"], totals["count"])
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.cursor["step"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        self.optimizer.step()
        return totals

    # --- checkpoint ----------------------------------------------------------------------------
    def _fold_running(self) -> None:
        """Move the on-device running sums into `epoch_totals` (one device sync, not one per step)."""
        for k, v in self._running.items():
            self.epoch_totals[k] = self.epoch_totals.get(k, 0.0) + float(v)
        self._running = {}

    def save_checkpoint(self) -> None:
        self._fold_running()
        if self.run is None:
            return
        state = self.state if self.dist is None else self.dist.gather_state(self.state)
        if not self.main:
            return
        trainer = {
            "cursor": self.cursor,
            "best": {**self.best, "loss": None if math.isinf(self.best["loss"]) else self.best["loss"]},
            "epoch_totals": self.epoch_totals,
        }
        ckpt.save_checkpoint(self.run / ckpt.CHECKPOINT, self.model, self.optimizer, state, trainer)

    def restore(self) -> None:
        """Continue from the run's training checkpoint, exactly where it stopped."""
        if self.run is None:
            raise ValueError("resume needs a run directory")
        c = ckpt.load_checkpoint(self.run / ckpt.CHECKPOINT)
        try:
            self.model.load_state_dict(c.model)
            self.optimizer.load_state_dict(c.optimizer)
        except (RuntimeError, ValueError, KeyError) as e:
            raise ValueError(
                f"the checkpoint in {self.run} does not fit this model: {str(e).splitlines()[0]}"
            ) from None
        self.state = c.state.to(self.device) if c.state is not None else None
        if self.dist is not None:
            self.state = self.dist.local_state(self.state)
        torch.set_rng_state(c.rng)
        self.cursor = c.trainer["cursor"]
        best = c.trainer["best"]
        self.best = {**best, "loss": math.inf if best["loss"] is None else best["loss"]}
        self.epoch_totals = c.trainer["epoch_totals"]
        self._truncate_log(self.cursor["step"])

    def _truncate_log(self, step: int) -> None:
        log = self.run / METRICS
        if self.main and log.exists():
            keep = [line for line in log.read_text().splitlines() if line and json.loads(line)["step"] <= step]
            ckpt.atomic_write(log, "".join(line + "\n" for line in keep).encode())

    def _log(self, record: dict[str, Any]) -> None:
        if self.run is not None and self.main:
            with open(self.run / METRICS, "a") as f:
                f.write(json.dumps(record) + "\n")

    # --- the loop ------------------------------------------------------------------------------
    def _clock(self) -> float:
        """Seconds on a monotonic clock: rank 0's in a distributed run, so all ranks stop and checkpoint together."""
        now = time.perf_counter()
        return now if self.dist is None else self.dist.agree(now)

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train until the epochs, the time or token budget, or early stopping end it; return a summary."""
        if self.dist is None:
            return self._fit(resume)
        with self.dist.failures():
            return self._fit(resume)

    def _fit(self, resume: bool) -> dict[str, Any]:
        from tqdm.auto import tqdm

        c = self.config
        if self.run is not None:
            self.run.mkdir(parents=True, exist_ok=True)
            if resume:
                self.restore()
                if self.main:
                    ckpt.save_config(self.run, self.model, self._settings())
            elif self.main:
                (self.run / METRICS).unlink(missing_ok=True)
                ckpt.save_model(self.run, self.model, self._settings())
        self.model.train()
        stopped = "epochs"
        clock = self._clock()
        elapsed0 = self.cursor["elapsed"]
        last_ckpt = clock
        n = len(self.train_layout)
        while self.cursor["epoch"] < c.epochs and stopped == "epochs":
            epoch = self.cursor["epoch"]
            if self.cursor["batch"] == 0:
                self.state = None  # a new epoch starts every lane from zero state
                self.epoch_totals = {}
            bar = tqdm(
                total=n,
                initial=self.cursor["batch"],
                desc=f"epoch {epoch + 1}/{c.epochs}",
                unit="batch",
                disable=not self.progress,
                leave=False,
                dynamic_ncols=True,
            )
            window_clock, window_tokens = self._clock(), 0
            for batch in self.train_layout.batches(epoch, start=self.cursor["batch"]):
                sums = self.train_step(batch)
                real = int(batch.mask.sum())
                for k, v in sums.items():
                    self._running[k] = self._running.get(k, 0.0) + v
                self.cursor["batch"] += 1
                self.cursor["step"] += 1
                self.cursor["tokens"] += real
                window_tokens += real
                now = self._clock()
                self.cursor["elapsed"] = elapsed0 + now - clock
                bar.update(1)
                if self.cursor["step"] % c.log_every == 0 or self.cursor["batch"] == n:
                    rate = window_tokens / max(now - window_clock, 1e-9)
                    loss = float(sums["loss"]) / max(float(sums["count"]), 1.0)
                    bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{rate:,.0f}", refresh=False)
                    self._log(
                        {
                            "kind": "step",
                            "epoch": epoch,
                            "step": self.cursor["step"],
                            "loss": loss,
                            "lr": self.lr_at(self.cursor["step"] - 1),
                            "tokens_per_s": rate,
                            "elapsed_s": self.cursor["elapsed"],
                        }
                    )
                    window_clock, window_tokens = now, 0
                if c.max_time is not None and self.cursor["elapsed"] >= c.max_time:
                    stopped = "max-time"
                elif c.max_tokens is not None and self.cursor["tokens"] >= c.max_tokens:
                    stopped = "max-tokens"
                if stopped != "epochs":
                    break
                if now - last_ckpt >= c.checkpoint_every and self.cursor["batch"] < n:
                    self.save_checkpoint()
                    last_ckpt = self._clock()
            bar.close()
            self._end_epoch(epoch, partial=self.cursor["batch"] < n)
            if self.cursor["batch"] >= n:
                self.cursor["epoch"] += 1
                self.cursor["batch"] = 0
            if c.patience is not None and self.best["bad"] >= c.patience:
                stopped = "early-stopping"
            self.save_checkpoint()
            last_ckpt = self._clock()
        if self.run is not None and self.main and (self.val_layout is None or self.best["epoch"] is None):
            ckpt.save_weights(self.run / ckpt.WEIGHTS, self.model)
        summary = self.summary(stopped)
        if self.run is not None and self.main:
            ckpt.write_json(self.run / "summary.json", summary)
            from .plots import plot_curves

            plot_curves(self.run / METRICS, self.run / "curves.png")
        if self.dist is not None:
            self.dist.barrier()  # the run directory is complete before any rank returns
        return summary

    def _end_epoch(self, epoch: int, partial: bool) -> None:
        self._fold_running()
        record: dict[str, Any] = {"kind": "epoch", "epoch": epoch, "step": self.cursor["step"], "partial": partial}
        record["train"] = self.objective.report(self.epoch_totals) if self.epoch_totals else None
        if self.val_layout is not None:
            val = evaluate(self.model, self.val_layout, self.objective, self.device, self.dist)
            record["val"] = val
            if val["loss"] < self.best["loss"]:
                self.best.update(loss=val["loss"], epoch=epoch, metrics=val, bad=0)
                if self.run is not None and self.main:
                    ckpt.save_weights(self.run / ckpt.WEIGHTS, self.model)
            else:
                self.best["bad"] += 1
        record["elapsed_s"] = self.cursor["elapsed"]
        self._log(record)
        if self.progress:
            val = record.get("val") or {}
            train = record["train"] or {}
            rate = self.cursor["tokens"] / max(self.cursor["elapsed"], 1e-9)
            parts = [
                f"epoch {epoch + 1}{' (partial)' if partial else ''}: train loss {train.get('loss', math.nan):.4f}"
            ]
            parts += [f"val {k} {v:.4f}" for k, v in val.items() if k in ("loss", "bpc", "perplexity", "mae")]
            print(
                ", ".join(parts) + f"  [{self.cursor['elapsed']:.0f}s, {rate:,.0f} tok/s]", file=sys.stderr, flush=True
            )

    def summary(self, stopped: str) -> dict[str, Any]:
        """What the run achieved, as JSON-ready values."""
        elapsed = self.cursor["elapsed"]
        return {
            "stopped": stopped,
            "epochs": self.cursor["epoch"] + (1 if self.cursor["batch"] else 0),
            "steps": self.cursor["step"],
            "tokens": self.cursor["tokens"],
            "elapsed_s": elapsed,
            "tokens_per_s": self.cursor["tokens"] / max(elapsed, 1e-9),
            "train": self.objective.report(self.epoch_totals) if self.epoch_totals else None,
            "best_epoch": self.best["epoch"],
            "val": self.best["metrics"],
            "mode": self.config.mode,
            "processes": 1 if self.dist is None else self.dist.world_size,
        }

    def _settings(self) -> dict[str, Any]:
        return {**self.settings, "train": asdict(self.config)}
