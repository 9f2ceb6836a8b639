"""The one checkpoint writer and reader.

A checkpoint is a plain dict of tensors and Python primitives, so it is read back with
``torch.load(weights_only=True)``: loading never runs code from the file (``centernet.io``
refuses zip bombs first). It is written atomically (temporary file in the same folder, fsync,
rename), so a crash, a full disk or Ctrl-C while saving leaves the previous ``last.pt`` intact.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config
from ..io import atomic_open, check_finite, interrupts_deferred, load_torch_file

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "run_config", "rng_state", "set_rng_state"]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read as one of ours."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically; Ctrl-C meanwhile waits until the file is in place.
    A full disk raises ``centernet.io.OutputError`` naming ``path``, whose old content stays."""
    with interrupts_deferred(), atomic_open(path) as handle:
        torch.save(state, handle)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's dict, read without running code from the file (``CheckpointError`` naming the
    file when it is refused, damaged, not ours, or its weights hold NaN or infinite values)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = load_torch_file(path, "checkpoint", refused=CheckpointError, corrupt=CheckpointError)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path}: not a centernet checkpoint (no 'model' entry)")
    for key in ("model", "ema"):
        if isinstance(state.get(key), dict):
            check_finite(state[key], path, CheckpointError)
    return state


def run_config(state: dict[str, Any], path: str | Path, remedy: str) -> Config:
    """The configuration of the run that wrote the checkpoint ``state`` (read from ``path``);
    ``CheckpointError`` saying ``remedy`` when it holds none (a hand-made ``{"model": ...}``)."""
    if not isinstance(state.get("config"), dict):
        raise CheckpointError(f"{path}: holds weights but not the configuration of the run that made them "
                              f"('config'); {remedy}")
    return Config.from_dict(state["config"], source=str(path))


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states as tensors and primitives (weights_only-loadable)."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
