"""The one builder: a zoo model by name, with the weights it is asked for (timm's ``build_model_with_cfg``).

    model = create_model("centernet_dla34", weights="centernet_dla34_140e_coco.pdparams")
    model = create_model("centernet_dla34", pretrained=True)              # the published COCO weights
    model = create_model("centernet_dla34", num_classes=3, pretrained_backbone=True)   # ImageNet backbone

It sits above ``models`` (structure only: :func:`centernet.models.build_model`) and ``weights`` (files:
reading, key mapping, the download cache), which know nothing of each other's business. The trainer
starts a run through :func:`load_initial_weights`, which is what :func:`create_model` loads with.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from torch import nn

from .models import build_model
from .weights import BackboneReport, LoadReport, load_backbone_weights, load_weights
from .weights.hub import backbone_weights, zoo_weights

__all__ = ["create_model", "load_initial_weights", "pretrained_files"]


def create_model(name: str, num_classes: int = 80, weights: str | Path | None = None, pretrained: bool = False,
                 pretrained_backbone: str | Path | bool | None = None, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with ``num_classes`` classes (extra kwargs go to its
    builder, e.g. ``head_planes``) and load what is asked:

    - ``weights``: a PaddleDetection ``.pdparams``, an original CenterNet ``.pth``, one of our
      checkpoints or a ``.safetensors``, loaded strictly (see :func:`centernet.load_weights`);
    - ``pretrained=True``: the published COCO weights of ``name``, downloaded once into the cache
      (:mod:`centernet.weights.hub`); with another ``num_classes`` all but the heatmap classifier load
      and a warning says so;
    - ``pretrained_backbone``: ImageNet weights for the backbone alone (a path, or True for the file
      PaddleDetection trains ``name`` from, downloaded once into the cache); neck and head keep their
      initialisation.

    Unknown names raise ``ValueError`` listing the known ones.
    """
    if pretrained and weights is not None:
        raise ValueError("give weights=PATH or pretrained=True, not both")
    model = build_model(name, num_classes=num_classes, **kwargs)
    reports = load_initial_weights(model, name, weights if weights is not None else bool(pretrained) or None,
                                   pretrained_backbone, num_classes_mismatch="reinit" if pretrained else "error")
    for report in reports:
        if isinstance(report, LoadReport) and report.reinitialized:
            warnings.warn(str(report), stacklevel=2)
    return model


def pretrained_files(name: str, pretrained: str | Path | bool | None = None,
                     pretrained_backbone: str | Path | bool | None = None,
                     progress: bool = True) -> tuple[Path | None, Path | None]:
    """The files behind ``pretrained`` (whole-model weights) and ``pretrained_backbone`` (ImageNet
    backbone weights): a path as given, ``True`` as the file published for zoo model ``name`` in the
    cache (downloaded the first time; offline, a one-line error names the URL and the cache path),
    ``None`` / ``False`` as None. Giving both raises ``ValueError``."""
    if pretrained and pretrained_backbone:
        raise ValueError("pretrained_backbone sets the backbone only and weights / pretrained the whole "
                         "model: give one of them")
    whole = zoo_weights(name, progress) if pretrained is True else Path(pretrained) if pretrained else None
    backbone = (backbone_weights(name, progress) if pretrained_backbone is True
                else Path(pretrained_backbone) if pretrained_backbone else None)
    return whole, backbone


def load_initial_weights(model: nn.Module, name: str, pretrained: str | Path | bool | None = None,
                         pretrained_backbone: str | Path | bool | None = None,
                         num_classes_mismatch: str = "error",
                         progress: bool = True) -> list[LoadReport | BackboneReport]:
    """Load into ``model`` (zoo model ``name``) the weights a run starts from, as
    :func:`pretrained_files` names them; returns what each load did (its one-line report).
    ``num_classes_mismatch="reinit"``: whole-model weights of another class count load all but the
    heatmap classifier, which is re-initialised (see :func:`centernet.load_weights`)."""
    whole, backbone = pretrained_files(name, pretrained, pretrained_backbone, progress)
    reports: list[LoadReport | BackboneReport] = []
    if whole is not None:
        reports.append(load_weights(model, whole, num_classes_mismatch=num_classes_mismatch))
    if backbone is not None:
        reports.append(load_backbone_weights(model, backbone))
    return reports
