"""Writing files safely: one atomic writer and strict JSON, shared by every module that writes.

A leaf module (standard library only), so that the data, run and serving layers can all use it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old content or the new, never a mix."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def jsonable(obj: Any) -> Any:
    """`obj` with NaN and infinities as None, so strict JSON parsers read it (MASE is inf on flat history)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as indented strict JSON (non-finite floats as null), atomically."""
    text = json.dumps(jsonable(obj), indent=2, sort_keys=True, allow_nan=False, default=str)
    atomic_write(Path(path), (text + "\n").encode())


def read_json(path: Path, what: str = "file") -> Any:
    """Read a JSON file, turning a missing or garbled file into one clear ValueError."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} is missing: is this a statefulrnn run directory?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{what} {path} is corrupt ({e}): restore it or train again") from None
