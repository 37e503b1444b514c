"""Truncated BPTT for stateful and stateless training, stateful evaluation, checkpoints and resume.

Stateful (the default): the batches of a stateful layout are run in order; the state each lane ends
a window with is detached (gradients stop at the window edge) and carried into the next window.
The state is zero at each epoch start and is reset inside a window where a sequence starts.

Stateless: the windows of a `StatelessLayout` are shuffled and each starts from zero state, or
from the state reached by running the `burn_in` steps before it without gradient.

Validation runs on its own state (`evaluation.evaluate`). `fit()` leaves the model holding the weights
its summary reports: the best on validation (kept in memory, and in RUN/model.safetensors), else the last.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import runs
from .device import resolve_device  # noqa: F401  (re-exported)
from .distributed import Distributed
from .evaluation import evaluate, to_tensors  # noqa: F401  (re-exported)
from .layout import Batch, Layout, evaluation_layout, training_layout  # noqa: F401  (re-exported)
from .model import SequenceModel
from .objectives import Objective
from .precision import choose_precision
from .state import State
from .train_config import RESUMABLE, TrainConfig, learning_rate, resumed_config  # noqa: F401  (re-exported)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so weights, dropout and shuffling repeat exactly."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
        self._resolve_precision()
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)
        self.total_steps = self.config.epochs * len(train)
        self.cursor = {"epoch": 0, "batch": 0, "step": 0, "tokens": 0, "elapsed": 0.0}
        self.best: dict[str, Any] = {"loss": math.inf, "epoch": None, "step": None, "metrics": None, "bad": 0}
        self.epoch_totals: dict[str, float] = {}
        self._running: dict[str, torch.Tensor] = {}
        self.state: State | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.lr = self.config.lr  # the rate of the last step taken

    def _resolve_precision(self) -> None:
        """Turn the configured precision into the one used (and recorded): refuse bf16 where the device
        cannot run this cell in bf16, and settle "auto" (rank 0's choice, in a distributed run)."""
        requested = self.config.precision
        m = self.model
        shape = (self.config.lanes, m.rnn.input_size, m.hidden_size, m.num_layers)  # what "auto" times
        precision, why = choose_precision(requested, self.device, m.cell, shape)
        if self.dist is not None and requested == "auto":
            agreed = "bf16" if self.dist.agree(float(precision == "bf16")) else "fp32"
            why = why if agreed == precision else "rank 0's choice"
            precision = agreed
        if precision != requested:
            self.config = replace(self.config, precision=precision)
        if requested == "auto" and self.progress:
            print(f"precision auto: {precision} ({why})", file=sys.stderr, flush=True)

    # --- learning rate -------------------------------------------------------------------------
    def lr_at(self, step: int, tokens: int = 0, elapsed: float = 0.0) -> float:
        """The learning rate of global step `step` after `tokens` training tokens and `elapsed` seconds:
        a pure function of the data cursor (saved in the checkpoint), so resume needs no scheduler state."""
        return learning_rate(self.config, step, tokens, elapsed, self.total_steps, len(self.train_layout))

    # --- one step ------------------------------------------------------------------------------
    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Forward, backward and update on one batch; carries the detached state in stateful mode.
        Returns the objective sums (of all ranks, in a distributed run)."""
        if self.dist is not None:
            batch = self.dist.shard(batch)
            if getattr(self.model, "dropout", 0):
                self.dist.seed_step(self.config.seed, self.cursor["step"])
        dtype = next(self.model.parameters()).dtype
        t = to_tensors(batch, self.device, dtype)  # inputs (lanes, window[, features]); targets, mask alike
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.config.precision == "bf16"):
            if self.train_layout.stateful:
                out, state = self.net(t["inputs"], self.state, t.get("resets"))  # out (lanes, window, n_outputs)
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
        self.lr = self.lr_at(self.cursor["step"], self.cursor["tokens"], self.cursor["elapsed"])
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
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
        runs.save_checkpoint(self.run / runs.CHECKPOINT, self.model, self.optimizer, state, trainer)

    def restore(self) -> None:
        """Continue from the run's training checkpoint, exactly where it stopped."""
        if self.run is None:
            raise ValueError("resume needs a run directory")
        c = runs.load_checkpoint(self.run / runs.CHECKPOINT)
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
        if self.best["epoch"] is not None and (self.run / runs.WEIGHTS).is_file():
            best = runs.read_weights(self.run / runs.WEIGHTS)
            self.best_weights = {k: v.to(self.device) for k, v in best.items()}
        self._truncate_log(self.cursor["step"])

    def _truncate_log(self, step: int) -> None:
        log = self.run / runs.METRICS
        if self.main and log.exists():
            keep = [line for line in log.read_text().splitlines() if line and json.loads(line)["step"] <= step]
            runs.atomic_write(log, "".join(line + "\n" for line in keep).encode())

    def _log(self, record: dict[str, Any]) -> None:
        if self.run is not None and self.main:
            with open(self.run / runs.METRICS, "a") as f:
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
                    runs.save_config(self.run, self.model, self._settings())
            elif self.main:
                (self.run / runs.METRICS).unlink(missing_ok=True)
                runs.save_model(self.run, self.model, self._settings())
        self.model.train()
        stopped = "epochs"
        clock = self._clock()
        elapsed0 = self.cursor["elapsed"]
        last_ckpt = last_eval = clock
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
                            "lr": self.lr,
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
                if (
                    self.val_layout is not None
                    and c.eval_every is not None
                    and now - last_eval >= c.eval_every
                    and self.cursor["batch"] < n
                ):
                    val = self._validate(epoch)
                    last_eval = now = self._clock()
                    self.cursor["elapsed"] = elapsed0 + now - clock
                    self._report({"kind": "eval", "epoch": epoch, "step": self.cursor["step"], "val": val})
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
            last_ckpt = last_eval = self._clock()
        if self.run is not None and self.main and (self.val_layout is None or self.best["epoch"] is None):
            runs.save_weights(self.run / runs.WEIGHTS, self.model)
        if self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)  # the weights the summary reports
        summary = self.summary(stopped)
        if self.run is not None and self.main:
            runs.write_json(self.run / runs.SUMMARY, summary)
            from .plots import plot_curves

            plot_curves(self.run / runs.METRICS, self.run / runs.CURVES)
        if self.dist is not None:
            self.dist.barrier()  # the run directory is complete before any rank returns
        return summary

    def _end_epoch(self, epoch: int, partial: bool) -> None:
        self._fold_running()
        record: dict[str, Any] = {"kind": "epoch", "epoch": epoch, "step": self.cursor["step"], "partial": partial}
        record["train"] = self.objective.report(self.epoch_totals) if self.epoch_totals else None
        if self.val_layout is not None:
            record["val"] = self._validate(epoch)
        self._report(record)

    def _report(self, record: dict[str, Any]) -> None:
        """Log an epoch's or a mid-epoch evaluation's record, and print it unless quiet."""
        from tqdm.auto import tqdm

        record["elapsed_s"] = self.cursor["elapsed"]
        self._log(record)
        if not self.progress:
            return
        val = record.get("val") or {}
        if record["kind"] == "epoch":
            train = record["train"] or {}
            partial = " (partial)" if record["partial"] else ""
            parts = [f"epoch {record['epoch'] + 1}{partial}: train loss {train.get('loss', math.nan):.4f}"]
        else:
            parts = [f"step {record['step']}"]
        parts += [f"val {k} {v:.4f}" for k, v in val.items() if k in ("loss", "bpc", "perplexity", "mae")]
        rate = self.cursor["tokens"] / max(self.cursor["elapsed"], 1e-9)
        line = ", ".join(parts) + f"  [{self.cursor['elapsed']:.0f}s, {rate:,.0f} tok/s]"
        tqdm.write(line, file=sys.stderr)  # above a running progress bar, not inside it

    def _validate(self, epoch: int) -> dict[str, float]:
        """Evaluate validation; keep the weights (in memory and RUN/model.safetensors) when they are the best yet."""
        val = evaluate(self.model, self.val_layout, self.objective, self.device, self.dist)
        if val["loss"] < self.best["loss"]:
            self.best.update(loss=val["loss"], epoch=epoch, step=self.cursor["step"], metrics=val, bad=0)
            self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            if self.run is not None and self.main:
                runs.save_weights(self.run / runs.WEIGHTS, self.model)
        else:
            self.best["bad"] += 1
        return val

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
            "best_step": self.best.get("step"),
            "val": self.best["metrics"],
            "mode": self.config.mode,
            "precision": self.config.precision,
            "processes": 1 if self.dist is None else self.dist.world_size,
        }

    def run_config(self) -> dict[str, Any]:
        """The config.json of this training (model arguments, task settings, training settings)."""
        return runs.run_config(self.model, self._settings())

    def _settings(self) -> dict[str, Any]:
        return {**self.settings, "train": asdict(self.config)}
