"""``load_backbone_weights(model, path)``: ImageNet-pretrained weights into ``model.backbone``.

PaddleDetection trains every zoo row from an ImageNet-pretrained backbone (its config's
``pretrain_weights``). Such a file is the classifier's state dict in the detector backbone's names,
without the ``backbone.`` prefix, plus the classifier's own layers the detector has no place for
(``fc``, ``out``, ``last_conv`` ...). PaddleDetection's loader (``match_state_dict`` in
ppdet/utils/checkpoint.py) gives each model key the longest file key that equals it or ends it
after a dot, and quietly skips whatever does not match or has another shape.

We match by the same rule, strictly: every backbone parameter and buffer must be found with its
shape (else :class:`WeightsMismatchError` lists the missing keys, and nothing is loaded: a file of
another backbone never half-loads); file entries with no place in the backbone are dropped and
counted in the report. The DCNv2 offset convs a detector adds (``conv_offset``, ResNet's last stage
in ``centernet_r50``) exist in no ImageNet file; they keep their zero start, as in PaddleDetection.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .loading import WeightsMismatchError, key_listing, key_problems, read_weights

__all__ = ["BackboneReport", "load_backbone_weights", "match_keys"]

# Layers a detector adds to an ImageNet backbone (DCNv2 offset and mask convs, zero at the start).
_DETECTOR_ONLY = re.compile(r"(^|\.)conv_offset\.(weight|bias)$")


@dataclass
class BackboneReport:
    """What :func:`load_backbone_weights` did."""

    path: str
    source: str  # the file's format: "paddle", "original", "centernet" or "safetensors"
    loaded: int  # backbone tensors copied from the file
    dropped: list[str] = field(default_factory=list)  # file entries with no place in the backbone
    kept: list[str] = field(default_factory=list)  # detector-only backbone tensors left at their start

    def __str__(self):
        line = f"{self.path}: loaded {self.loaded} backbone tensors ({self.source} format)"
        if self.dropped:
            line += f"; dropped {len(self.dropped)} entries with no place in the backbone ({key_listing(self.dropped)})"
        if self.kept:
            line += f"; {len(self.kept)} deformable-conv offset tensors not in the file keep their zero start"
        return line


def match_keys(model_keys, file_keys) -> dict[str, str]:
    """PaddleDetection's rule: each model key -> the longest file key that equals it or ends it
    after a dot (``backbone.level0.0.conv.weight`` <- ``level0.0.conv.weight``); unmatched keys
    are left out."""
    available = set(file_keys)
    matches = {}
    for key in model_keys:
        parts = key.split(".")
        suffixes = (".".join(parts[i:]) for i in range(len(parts)))  # longest first
        found = next((suffix for suffix in suffixes if suffix in available), None)
        if found is not None:
            matches[key] = found
    return matches


def load_backbone_weights(model: nn.Module, path) -> BackboneReport:
    """Load ImageNet backbone weights (``.pdparams``, ``.pth``, checkpoint, ``.safetensors``; with or
    without the ``backbone.`` prefix) into ``model.backbone`` in place; neck and head are untouched.

    Raises :class:`WeightsMismatchError` naming the file and listing the backbone keys it lacks,
    those whose shapes differ and file keys that would fill two places; then nothing is loaded.
    """
    path = Path(path)
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"{type(model).__name__} has no backbone to load {path} into")
    source, weights = read_weights(path)
    target = backbone.state_dict()
    wanted = [k for k in target if not k.endswith("num_batches_tracked")]
    found = match_keys([f"backbone.{k}" for k in wanted], weights)
    matched = {k: found[f"backbone.{k}"] for k in wanted if f"backbone.{k}" in found}
    kept = [k for k in wanted if k not in matched and _DETECTOR_ONLY.search(k)]
    missing = [k for k in wanted if k not in matched and k not in kept]
    values = {k: weights[w] for k, w in matched.items()}
    mismatched = [f"{k}: file {list(values[k].shape)} vs model {list(target[k].shape)}"
                  for k in matched if values[k].shape != target[k].shape]
    ambiguous = [w for w, uses in Counter(matched.values()).items() if uses > 1]
    problems = key_problems(("missing", missing), ("shape mismatch", mismatched), ("matching several keys", ambiguous))
    if problems:
        raise WeightsMismatchError(f"{path}: does not fit the {type(backbone).__name__} backbone "
                                   f"({source} format), nothing loaded: {problems}")
    with torch.no_grad():
        for key, value in values.items():
            target[key].copy_(value)
    used = set(matched.values())
    dropped = [w for w in weights if w not in used and not w.endswith("num_batches_tracked")]
    return BackboneReport(str(path), source, len(values), dropped, kept)
