"""Data-parallel stateful training on torch.distributed: lanes sharded over ranks, DDP for gradients.

Every rank builds the same global layout a single process would build; rank r owns a contiguous
block of its lanes and carries their state. Each rank's loss is its part of the global loss sum
over the global count, times the world size that DistributedDataParallel's averaging divides out,
so N ranks give the gradients one process gets on all lanes. Metric sums are all-reduced, and the
lane states of all ranks are gathered into the checkpoint, which is the single-process one and can
be resumed on any number of processes (the global lanes are simply re-sharded).

Launch with torchrun (`torchrun --nproc-per-node=N -m statefulrnn train ...`) or `--nproc N`.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .layout import Batch
from .state import State

TIMEOUT_ENV = "STATEFULRNN_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 300.0
_PEER_SIGNS = ("gloo", "nccl", "connection reset", "connection closed", "timed out", "broken pipe", "timeout")


class DistributedError(RuntimeError):
    """Another rank died or stopped answering, so this one stops too."""


def lane_block(lanes: int, rank: int, world_size: int) -> slice:
    """The contiguous block of `lanes` that `rank` owns; the first `lanes % world_size` ranks own one more."""
    base, extra = divmod(lanes, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def shard_batch(batch: Batch, rows: slice) -> Batch:
    """Rows `rows` of a batch. An empty block gets a fully masked copy of row 0, so that the rank
    still runs forward and backward (DDP needs every rank in every gradient all-reduce)."""
    if rows.start >= rows.stop:
        part = shard_batch(batch, slice(0, 1))
        return replace(part, mask=np.zeros_like(part.mask))

    def cut(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[rows]

    resets = cut(batch.resets)
    return Batch(
        batch.index,
        batch.inputs[rows],
        batch.targets[rows],
        batch.mask[rows],
        resets if resets is not None and resets.any() else None,
        batch.positions[rows],
        cut(batch.context),
        cut(batch.context_resets),
    )


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job: rank, world size, device, and the collectives training needs."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    timeout: float
    control: Any = None  # a gloo group for CPU-side agreement when the default group is NCCL

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def lanes(self, total: int) -> slice:
        """This rank's block of `total` lanes."""
        return lane_block(total, self.rank, self.world_size)

    def check_lanes(self, lanes: int) -> None:
        """Refuse a layout with fewer lanes than processes (some rank would carry no lane)."""
        if lanes < self.world_size:
            raise ValueError(
                f"{lanes} lane(s) cannot be shared by {self.world_size} processes: use at least "
                f"{self.world_size} lanes or fewer processes"
            )

    def shard(self, batch: Batch) -> Batch:
        """This rank's rows of a global batch."""
        return shard_batch(batch, lane_block(batch.inputs.shape[0], self.rank, self.world_size))

    def wrap(self, model: nn.Module) -> DistributedDataParallel:
        """The model in DDP (parameters broadcast from rank 0; gradients averaged in backward)."""
        return DistributedDataParallel(model, device_ids=None)

    def all_reduce_sums(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Objective sums of every rank added up (one all-reduce; stays on the device)."""
        keys = sorted(sums)
        stacked = torch.stack([sums[k].detach() for k in keys])
        dist.all_reduce(stacked)
        return dict(zip(keys, stacked.unbind()))

    def local_loss(self, loss_sum: torch.Tensor, global_count: torch.Tensor) -> torch.Tensor:
        """This rank's loss: after DDP averages the gradients, they are those of global sum / global count."""
        return loss_sum * self.world_size / global_count.clamp_min(1.0)

    def sum_totals(self, totals: dict[str, float]) -> dict[str, float]:
        """Float metric sums added over ranks, in rank order, so every rank gets the same numbers."""
        parts: list[dict[str, float] | None] = [None] * self.world_size
        dist.all_gather_object(parts, totals, group=self.control)
        out: dict[str, float] = {}
        for part in parts:
            for k, v in (part or {}).items():
                out[k] = out.get(k, 0.0) + v
        return out

    def agree(self, value: float) -> float:
        """Rank 0's `value` on every rank (clock readings, so all ranks stop and checkpoint together)."""
        t = torch.tensor([value], dtype=torch.float64)
        dist.broadcast(t, src=0, group=self.control)
        return float(t[0])

    def gather_state(self, state: State | None) -> State | None:
        """The lane states of all ranks, concatenated in lane order, on rank 0 (None elsewhere)."""
        parts: list[State | None] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(None if state is None else state.to("cpu"), parts, dst=0, group=self.control)
        if parts is None or any(p is None for p in parts):
            return None
        return State.concat(parts)

    def local_state(self, state: State | None) -> State | None:
        """This rank's lanes of a global state (as read from a checkpoint written with any world size)."""
        return None if state is None else state.select(self.lanes(state.lanes))

    def seed_step(self, seed: int, step: int) -> None:
        """Seed dropout for this rank and step: masks differ between ranks and repeat exactly on resume."""
        torch.manual_seed(int(np.random.SeedSequence([seed, self.rank, step]).generate_state(1)[0]))

    def barrier(self) -> None:
        dist.barrier(group=self.control)

    @contextmanager
    def failures(self) -> Iterator[None]:
        """Turn a lost peer (died, or silent past the timeout) into one clear `DistributedError`."""
        try:
            yield
        except RuntimeError as e:
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if isinstance(e, DistributedError) or not (
                isinstance(e, dist.DistError) or any(s in text.lower() for s in _PEER_SIGNS)
            ):
                raise
            raise DistributedError(
                f"rank {self.rank} of {self.world_size} lost contact with another process (it died, or was silent "
                f"for more than {self.timeout:g} s; set {TIMEOUT_ENV} to change that): stopping the whole job. "
                f"The first error of the other ranks is the cause. ({text})"
            ) from e


def launched() -> bool:
    """True in a process that torchrun (or another env:// launcher) started as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device) -> Distributed | None:
    """Join the process group that torchrun's environment describes (gloo on CPU, NCCL on CUDA, with
    timeouts); None in a single process. A CUDA device becomes cuda:LOCAL_RANK."""
    if not dist.is_available() or not (launched() or dist.is_initialized()):
        return None
    timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if device.index is None:
            if local_rank >= torch.cuda.device_count():
                raise ValueError(
                    f"local rank {local_rank} has no GPU: this host has {torch.cuda.device_count()}; "
                    "start at most one process per GPU"
                )
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        cuda = device if device.type == "cuda" else None
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout), device_id=cuda)
        atexit.register(_destroy)
    if dist.get_world_size() == 1:
        return None
    control = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout)) if device.type == "cuda" else None
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank, device, timeout, control)


def _destroy() -> None:
    if not dist.is_initialized():
        return
    if dist.get_backend() == "gloo" and dist.get_world_size() > 1:
        # Leave together: a rank that tears down gloo while a peer still holds its connections can make
        # that peer abort at exit (std::terminate, signal 6), seen on busy machines. A dead peer: give up.
        try:
            dist.monitored_barrier(timeout=timedelta(seconds=30))
        except RuntimeError:
            pass
    dist.destroy_process_group()


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run `statefulrnn ARGV` (less any --nproc) as `nproc` processes on this machine under torchrun's
    agent, each with an equal share of the CPU threads. Returns 0, or raises `DistributedError`
    naming the first process that failed (its own message is printed above)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args, skip = [], False
    for a in argv:
        if skip or a.startswith("--nproc="):
            skip = False
        elif a == "--nproc":
            skip = True
        else:
            args.append(a)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // nproc)))
    config = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", __package__, *args])
    try:
        run(config)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        how = f"signal {-failure.exitcode}" if failure.exitcode < 0 else f"exit status {failure.exitcode}"
        raise DistributedError(f"process {rank} of {nproc} failed first ({how}): see its messages above") from None
    return 0
