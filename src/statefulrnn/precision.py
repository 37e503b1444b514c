"""Training precision: can this device train this cell in bfloat16, and should "auto" use it?

`--precision bf16` runs the training forward pass under bfloat16 autocast. Whether that works is a
property of the kernels, not just of the CPU: oneDNN's LSTM has no bf16 primitive on CPUs without
native bf16 (AVX2 only, no AVX512-BF16/AMX), while PyTorch's own tanh RNN runs bf16 anywhere (emulated,
slowly) and its GRU stays float32 under CPU autocast (only the head runs in bf16). CPUID flags cannot
tell these apart, and oneDNN may be capped below the CPU (the environment variable ONEDNN_MAX_CPU_ISA),
so the probe simply tries: a tiny forward and backward of the cell under autocast on the device. The
answers are cached for the process; "auto" adds a short timing of bf16 against fp32.
"""

from __future__ import annotations

import functools
import time

import torch

PRECISIONS = ("fp32", "bf16", "auto")

# "auto" takes bf16 only where it is at least this much faster than fp32 (timing noise is a few %).
AUTO_MIN_SPEEDUP = 1.15


def _key(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type != "cpu" and hasattr(torch, "accelerator"):
        torch.accelerator.synchronize()


def _step_fn(device: torch.device, cell: str, lanes: int, window: int, features: int, hidden: int, layers: int = 1):
    """A function running one training forward+backward of a `SequenceModel` in fp32 or bf16 autocast."""
    from .model import SequenceModel

    model = SequenceModel(cell, n_features=features, hidden_size=hidden, num_layers=layers).to(device)
    x = torch.randn(lanes, window, features, device=device)

    def step(bf16: bool) -> torch.dtype:
        with torch.enable_grad():
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                out, state = model(x)
            out.float().square().mean().backward()
        model.zero_grad(set_to_none=True)
        return state.h.dtype  # bfloat16 where autocast runs the recurrent cell itself in bf16

    return step


def _isolated(device: torch.device):
    """Keep the probe's weights and inputs from consuming the caller's random streams (seeded runs)."""
    if device.type == "cuda":
        return torch.random.fork_rng(devices=[device.index], device_type="cuda")
    return torch.random.fork_rng(devices=[])


@functools.cache
def _support(key: str, cell: str) -> tuple[bool, str, bool]:
    device = torch.device(key)
    with _isolated(device):
        torch.manual_seed(0)
        try:
            dtype = _step_fn(device, cell, lanes=2, window=3, features=4, hidden=8)(True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return False, first.split(". ")[0].rstrip("."), False
    if dtype != torch.bfloat16:
        return True, f"autocast leaves {cell} in {str(dtype).removeprefix('torch.')} on {device.type}", False
    return True, "a bf16 forward and backward ran", True


def bf16_support(device: torch.device | str, cell: str) -> tuple[bool, str]:
    """Whether a `cell` model trains under bf16 autocast on `device`, and why not (tried once per process)."""
    return _support(_key(device), cell)[:2]


def bf16_cell(device: torch.device | str, cell: str) -> bool:
    """Whether bf16 autocast runs the recurrent cell itself in bf16 (CPU autocast leaves GRU in float32)."""
    return _support(_key(device), cell)[2]


@functools.cache
def _native(key: str) -> bool:
    device = torch.device(key)
    if device.type == "cpu":
        # oneDNN's own check: AVX512-BF16 or AMX, and honours ONEDNN_MAX_CPU_ISA.
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    return False


def bf16_native(device: torch.device | str) -> bool:
    """Whether `device` has native bf16 arithmetic (CPU: AVX512-BF16/AMX as oneDNN sees it; CUDA: sm80+)."""
    return _native(_key(device))


# The shape "auto" times when the caller gives none: (lanes, input features, hidden size, layers).
TIMING_SHAPE = (32, 64, 256, 1)
TIMING_WINDOW = 32
MAX_TIMING_LANES = 64


@functools.cache
def _speedup(key: str, cell: str, shape: tuple[int, int, int, int], reps: int = 5) -> float:
    device = torch.device(key)
    lanes, features, hidden, layers = shape
    with _isolated(device):
        torch.manual_seed(0)
        step = _step_fn(device, cell, min(lanes, MAX_TIMING_LANES), TIMING_WINDOW, features, hidden, layers)
        times: dict[bool, list[float]] = {False: [], True: []}
        for rep in range(reps + 1):  # the first round warms up (primitive creation, allocations)
            for bf16 in (False, True):
                _sync(device)
                start = time.perf_counter()
                step(bf16)
                _sync(device)
                if rep:
                    times[bf16].append(time.perf_counter() - start)
    return min(times[False]) / min(times[True])


def bf16_speedup(device: torch.device | str, cell: str, shape: tuple[int, int, int, int] | None = None) -> float:
    """fp32 time / bf16 time of one training step of `cell` on `device` (measured once per process and shape).

    `shape` is (lanes, input features, hidden size, layers) of the run, lanes capped at
    `MAX_TIMING_LANES`, windows of `TIMING_WINDOW` steps: the speed-up grows with the matrices (on
    2 threads, a 1x128 LSTM gains about 1.1x, a 2x256 one 1.4-1.5x), so it is measured at the run's
    own size. Interleaved rounds, the fastest of each: other work on a shared machine only adds time."""
    return _speedup(_key(device), cell, tuple(shape or TIMING_SHAPE))


def choose_precision(
    requested: str, device: torch.device | str, cell: str, shape: tuple[int, int, int, int] | None = None
) -> tuple[str, str]:
    """The precision to train with ("fp32" or "bf16") for `requested`, and the reason, in words.

    "fp32" is taken as is. "bf16" is refused with a one-line ValueError where the probe fails.
    "auto" is bf16 only where the device has native bf16, the probe passes with the cell itself in
    bf16, and bf16 measured at least `AUTO_MIN_SPEEDUP` times faster at `shape` (see `bf16_speedup`);
    otherwise fp32. Being a measurement, "auto" can choose differently near the threshold: a run
    records what it chose, and runs that must match choose fp32 or bf16 themselves.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be fp32, bf16 or auto, got {requested!r}")
    if requested == "fp32":
        return "fp32", "asked for"
    where = f"{cell} on {_key(device)}"
    ok, reason = bf16_support(device, cell)
    if requested == "bf16":
        if not ok:
            raise ValueError(
                f"bf16 training of {where} is not supported here ({reason}); this needs native bf16 "
                "(AVX512-BF16 or AMX on CPU): use --precision fp32 (or auto)"
            )
        return "bf16", "asked for"
    if not bf16_native(device):
        return "fp32", f"no native bf16 for {where}"
    if not ok:
        return "fp32", f"bf16 fails for {where}: {reason}"
    if not bf16_cell(device, cell):
        return "fp32", reason
    speedup = bf16_speedup(device, cell, shape)
    if speedup < AUTO_MIN_SPEEDUP:
        return "fp32", f"bf16 measured {speedup:.2f}x the speed of fp32 for {where}"
    return "bf16", f"bf16 measured {speedup:.2f}x faster than fp32 for {where}"


def resolve_precision(
    requested: str, device: torch.device | str, cell: str, shape: tuple[int, int, int, int] | None = None
) -> str:
    """`choose_precision` without the reason: "fp32" or "bf16"."""
    return choose_precision(requested, device, cell, shape)[0]
