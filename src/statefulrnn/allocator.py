"""glibc malloc settings that keep recurrent training fast on CPU.

The fused LSTM allocates large per-window buffers (forward and backward). With glibc's dynamic
mmap/trim thresholds those buffers can be handed back to the OS and faulted in again every window
(thousands of minor page faults, ~10 ms per window on 2 cores). Fixed thresholds keep them in the
heap; BENCHMARKS.md measures about 1.5x faster training from this alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def pin_malloc(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Fix glibc's mmap and trim thresholds; False (and no change) off Linux/glibc or when
    STATEFULRNN_MALLOC=default is set."""
    if not sys.platform.startswith("linux") or os.environ.get("STATEFULRNN_MALLOC") == "default":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)
        )
    except (OSError, AttributeError):
        return False
