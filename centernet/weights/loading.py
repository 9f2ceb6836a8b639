"""``load_weights(model, path)``: PaddleDetection ``.pdparams``, original CenterNet ``.pth`` and our
own checkpoints, read without running code from the file, mapped to our names, checked, loaded.

The format is told by the file's content, not its name: a safetensors file (``centernet convert``
writes them) is read without pickle; a zip archive or a legacy torch pickle goes through
``torch.load(weights_only=True)``; any other pickle through the restricted :func:`read_pdparams`. A file whose keys or shapes do not fit the model raises
:class:`WeightsMismatchError` listing them, and nothing is loaded: a file of another model never
half-loads.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..io import check_finite, load_torch_file
from .mapping import looks_original, original_key, paddle_key, strip_prefix
from .pdparams import UnsafeWeightsError, WeightsError, WeightsFormatError, read_pdparams
from .safetensors_io import implausible_header, is_safetensors, read_safetensors

__all__ = ["WeightsMismatchError", "LoadReport", "read_weights", "load_weights", "load_state", "head_kwargs",
           "key_listing", "key_problems"]

# The first pickle of a pre-1.6 torch.save file is this magic number (protocol 2, LONG1 of 10 bytes).
_LEGACY_TORCH_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_SHOWN = 12  # keys listed per category in an error message
PRIOR_BIAS = -2.19  # the heatmap's initial bias (CenterNetHead's prior_bias)


class WeightsMismatchError(WeightsError):
    """The file's parameters do not fit the model (missing, unexpected or mis-shaped keys)."""


@dataclass
class LoadReport:
    """What :func:`load_weights` did."""

    path: str
    source: str  # "paddle", "original", "centernet" or "safetensors"
    loaded: int  # tensors copied into the model
    missing: list[str] = field(default_factory=list)  # model keys the file lacks (strict=False)
    unexpected: list[str] = field(default_factory=list)  # file keys the model lacks
    mismatched: list[str] = field(default_factory=list)  # "key: file [..] vs model [..]"
    reinitialized: list[str] = field(default_factory=list)  # heatmap classifier keys of another class count
    file_classes: int | None = None  # the file's and the model's class counts, when re-initialised
    model_classes: int | None = None

    def problems(self) -> str:
        """The missing, unexpected and mis-shaped keys, listed ('' when there are none)."""
        return key_problems(("missing", self.missing), ("unexpected", self.unexpected),
                            ("shape mismatch", self.mismatched))

    def __str__(self):
        problems = self.problems()
        reinit = (f"; heatmap classifier re-initialised (bias {PRIOR_BIAS}): the file has {self.file_classes} "
                  f"classes, the model {self.model_classes}" if self.reinitialized else "")
        return (f"{self.path}: loaded {self.loaded} tensors ({self.source} format)"
                + (f"; {problems}" if problems else "") + reinit)


def key_problems(*labelled: tuple[str, list[str]]) -> str:
    """``"3 missing: a, b, c; 1 shape mismatch: ..."`` for the non-empty (label, keys) pairs."""
    return "; ".join(f"{len(keys)} {label}: {key_listing(keys)}" for label, keys in labelled if keys)


def key_listing(keys: list[str]) -> str:
    """The first keys, comma-separated, and how many more there are: ``"a, b, ... (40 more)"``."""
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def _is_torch_file(path: Path) -> bool:
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as handle:
        head = handle.read(14)
    return head[:2] == b"\x80\x02" and head[2:4] == b"\x8a\x0a" and head[4:14] == _LEGACY_TORCH_MAGIC


def _torch_load(path: Path):
    return load_torch_file(path, "weights file", refused=UnsafeWeightsError, corrupt=WeightsFormatError)


def read_weights(path) -> tuple[str, dict[str, torch.Tensor]]:
    """Read a weights file into ``(source, {our key: tensor})``.

    ``source`` is ``"paddle"`` (a ``.pdparams`` dict), ``"original"`` (an original CenterNet
    checkpoint: ``{"epoch", "state_dict"}``, optional ``module.`` prefix), ``"centernet"`` (our
    checkpoint ``{"model", "ema", ...}``, the EMA weights when present, or a plain state dict) or
    ``"safetensors"`` (a file of ``centernet convert``: our names, PyTorch layout). Keys are already
    mapped to our names; entries with no place in a detector are dropped. Paddle lays out
    convolution and BatchNorm tensors as PyTorch does, and our models have no other layers, so the
    tensors are used as the file holds them. Weights holding NaN or infinite values are refused (:class:`WeightsFormatError` naming them).
    """
    path = Path(path)
    if path.is_dir():
        raise WeightsFormatError(f"{path}: is a folder, not a weights file")
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    source, weights = _read_weights(path)
    check_finite(weights, path, WeightsFormatError)
    return source, weights


def _read_weights(path: Path) -> tuple[str, dict[str, torch.Tensor]]:
    if is_safetensors(path):
        return "safetensors", {strip_prefix(k): v for k, v in read_safetensors(path)[1].items()}
    if not _is_torch_file(path):
        try:
            arrays = read_pdparams(path)
        except WeightsFormatError:
            reason = implausible_header(path)  # a damaged safetensors file is no pickle either
            if reason:
                raise WeightsFormatError(reason) from None
            raise
        return "paddle", {paddle_key(k): torch.from_numpy(np.ascontiguousarray(v))
                          for k, v in arrays.items()}

    state = _torch_load(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # original CenterNet: {"epoch", "state_dict"}
    elif isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state.get("ema") or state["model"]  # ours: prefer the EMA weights
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsFormatError(f"{path}: expected a state dict of tensors (or a checkpoint "
                                 f"holding one under 'state_dict' / 'model')")
    if looks_original(state):
        mapped = {original_key(k): v for k, v in state.items()}
        return "original", {k: v for k, v in mapped.items() if k is not None}
    return "centernet", {strip_prefix(k): v for k, v in state.items()}


def head_kwargs(weights: dict[str, torch.Tensor]) -> dict[str, int]:
    """What the heatmap head of ``weights`` (our key names) says about the model it came from:
    ``num_classes`` (its classifier's outputs) and ``head_planes`` (its hidden conv's), where present."""
    kwargs = {}
    for name, key in (("head_planes", "head.heatmap.0.conv.bias"), ("num_classes", "head.heatmap.2.conv.bias")):
        if isinstance(weights.get(key), torch.Tensor) and weights[key].ndim == 1:
            kwargs[name] = int(weights[key].shape[0])
    return kwargs


def _heatmap_classifier(model: nn.Module, weights: dict, target: dict) -> list[str]:
    """The keys of the heatmap head's last conv when only its class count differs from the file's."""
    num_classes = getattr(model, "num_classes", None)
    keys = [k for k in target if k.startswith("head.heatmap.") and k in weights
            and target[k].ndim and target[k].shape[0] == num_classes]
    keys = [k for k in keys if weights[k].shape[1:] == target[k].shape[1:] and weights[k].shape != target[k].shape]
    return keys if len(keys) == 2 else []  # its weight and bias


def _reinitialise(weight: torch.Tensor, bias: torch.Tensor) -> None:
    """The head's initialisation: weights uniform(+-1/sqrt(fan_in)), bias at the prior."""
    bound = 1.0 / math.sqrt(weight[0].numel())
    nn.init.uniform_(weight, -bound, bound)
    nn.init.constant_(bias, PRIOR_BIAS)


def load_weights(model: nn.Module, path, strict: bool = True, num_classes_mismatch: str = "error") -> LoadReport:
    """Load a ``.pdparams`` / ``.pth`` / checkpoint / ``.safetensors`` file into ``model`` in place.

    With ``strict=True`` every parameter and buffer of the model must come from the file (BatchNorm
    ``num_batches_tracked`` excepted) and every file entry must fit one, with the same shape;
    otherwise :class:`WeightsMismatchError` lists the offending keys and the model is untouched.
    With ``strict=False`` the entries that fit are loaded and the rest reported (fine-tuning with
    another class count); still an error when nothing fits. Returns a :class:`LoadReport`.

    ``num_classes_mismatch="reinit"`` fine-tunes to another class count: when the heatmap head's
    last conv is the file's only misfit in its class count, everything else loads (strictly if
    asked) and that conv is re-initialised (bias -2.19); the report's line says so.
    """
    path = Path(path)
    source, weights = read_weights(path)
    return load_state(model, weights, source, path, strict, num_classes_mismatch)


def load_state(model: nn.Module, weights: dict[str, torch.Tensor], source: str, path, strict: bool = True,
               num_classes_mismatch: str = "error") -> LoadReport:
    """:func:`load_weights` for weights already read (``source`` and ``path`` name them in the
    report and errors)."""
    if num_classes_mismatch not in ("error", "reinit"):
        raise ValueError(f"num_classes_mismatch must be 'error' or 'reinit', got {num_classes_mismatch!r}")
    target = model.state_dict()
    reinit = _heatmap_classifier(model, weights, target) if num_classes_mismatch == "reinit" else []
    file_classes = int(weights[reinit[0]].shape[0]) if reinit else None
    weights = {k: v for k, v in weights.items() if k not in reinit}
    missing = [k for k in target if k not in weights and k not in reinit and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in weights if k not in target]
    mismatched = [f"{k}: file {list(weights[k].shape)} vs model {list(target[k].shape)}"
                  for k in weights if k in target and weights[k].shape != target[k].shape]
    fitting = {k: v for k, v in weights.items() if k in target and v.shape == target[k].shape}
    report = LoadReport(str(path), source, len(fitting), missing, unexpected, mismatched, reinit,
                        file_classes, getattr(model, "num_classes", None) if reinit else None)

    if (strict and (missing or unexpected or mismatched)) or not fitting:
        raise WeightsMismatchError(f"{path}: does not fit {type(model).__name__} "
                                   f"({source} format), nothing loaded: "
                                   f"{report.problems() or 'no key fits the model'}")
    with torch.no_grad():
        for key, value in fitting.items():
            target[key].copy_(value)
        if reinit:
            weight, bias = sorted(reinit, key=lambda k: not k.endswith("weight"))
            _reinitialise(target[weight], target[bias])
    return report
