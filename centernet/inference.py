"""What every detector shares, whatever network runs inside: images in, torchvision-style detections out.

:class:`BaseDetector` does the work around the network, one image's path through it::

    load_image(file)                 RGB uint8 [H, W, 3], EXIF applied
    for each test scale (default: 1 only):
      EvalTransform.at_scale         resize by the scale, affine to the input size, normalise
                                     -> [3, h, w], inverse affine to original-image pixels
      raw_detections(batch)          the subclass's network and decode: top-K boxes in INPUT pixels
      affine_boxes                   boxes in original-image pixels, clipped to the image
    merge_detections (>1 scale)      all scales' boxes, soft-NMS (or NMS) per class, top-K
    score threshold

Two subclasses fill in ``raw_detections``: :class:`centernet.Detector` (a PyTorch model, then
:func:`centernet.decode.decode`; the flip test) and :class:`centernet.OnnxDetector` (an exported graph,
decode inside, in onnxruntime). ``predict()``, ``evaluate()`` and the video loop take either.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .data.coco import pad_images
from .data.coco_classes import COCO_CLASSES
from .data.images import load_image
from .data.transforms import EvalTransform
from .decode import affine_boxes
from .nms import MERGE_METHODS, merge_detections

__all__ = ["BaseDetector"]


class BaseDetector(abc.ABC):
    """Turns images of any size into torchvision-style detections around a network that a subclass
    runs in :meth:`raw_detections`.

    Each result is a dict with ``boxes`` [N, 4] xyxy in original-image pixels, ``scores`` [N] and
    ``labels`` [N] (contiguous class indices; ``class_names[label]`` names them; 80 classes without
    names get COCO's), sorted by score.

    Args:
        num_classes: the network's class count.
        class_names: one per class (default: COCO's for 80 classes, else "0", "1", ...).
        input_size, keep_res: the evaluation transform (:class:`~centernet.data.EvalTransform`):
            each image at its own resolution (padded) or resized to ``input_size`` (height, width).
        max_detections: K, detections per image.
        score_threshold: detections at or below it are dropped.
        scales: multi-scale test, e.g. ``(0.5, 0.75, 1, 1.25, 1.5)``, the original CenterNet's: each
            image runs once per scale, resized by it, the ``max_detections`` best of each scale
            are pooled and merged per class by ``merge`` ("soft-nms" or "nms", see
            ``centernet.nms``), and the ``max_detections`` best are kept.
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None,
                 input_size: tuple[int, int] = (512, 512), keep_res: bool = True, max_detections: int = 100,
                 score_threshold: float = 0.0, scales: Sequence[float] = (1.0,), merge: str = "soft-nms"):
        if class_names is None:
            class_names = COCO_CLASSES if num_classes == len(COCO_CLASSES) else [str(i) for i in range(num_classes)]
        self.class_names = list(class_names)
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for a model of {num_classes} classes")
        scales = tuple(float(scale) for scale in scales)
        if not scales or not all(scale > 0 for scale in scales):
            raise ValueError(f"test scales must be one or more positive numbers, got {scales}")
        if merge not in MERGE_METHODS:
            raise ValueError(f"merge method {merge!r}: choose one of {', '.join(MERGE_METHODS)}")
        self.transform = EvalTransform(input_size=tuple(input_size), keep_res=keep_res)
        self.max_detections = max_detections
        self.score_threshold = score_threshold
        self.scales, self.merge = scales, merge

    @abc.abstractmethod
    def raw_detections(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-K ``boxes [B, K, 4]`` in INPUT pixels, ``scores [B, K]``, ``labels [B, K]`` of a
        normalised batch ``images [B, 3, H, W]``, before the inverse affine and the score threshold."""

    @torch.inference_mode()
    def detect_images(self, images: Sequence[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        """Detections for RGB uint8 arrays ``[H, W, 3]`` (see the module docstring)."""
        per_scale = [self._detections_at_scale(images, scale) for scale in self.scales]
        boxes, scores, labels = (torch.cat(parts, dim=1) for parts in zip(*per_scale))  # [B, S*K, ...]
        results = []
        for i in range(len(images)):
            image_boxes, image_scores, image_labels = boxes[i], scores[i], labels[i]
            if len(self.scales) > 1:
                image_boxes, image_scores, image_labels = merge_detections(
                    image_boxes, image_scores, image_labels, self.merge, self.max_detections)
            keep = image_scores > self.score_threshold
            results.append({"boxes": image_boxes[keep].cpu(), "scores": image_scores[keep].cpu(),
                            "labels": image_labels[keep].cpu()})
        return results

    def _detections_at_scale(self, images: Sequence[np.ndarray], scale: float
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top-K ``boxes [B, K, 4]`` in original-image pixels (clipped to the image), ``scores``
        and ``labels [B, K]`` of the images resized by ``scale``."""
        inputs = [self.transform.at_scale(image, scale) for image in images]
        batch = pad_images([torch.as_tensor(tensor) for tensor, _ in inputs])  # [B, 3, H, W]
        boxes, scores, labels = self.raw_detections(batch)  # top-K, boxes in input pixels
        inverses = torch.stack([torch.as_tensor(inverse) for _, inverse in inputs])  # [B, 2, 3]
        boxes = affine_boxes(boxes, inverses.to(boxes))  # original-image pixels
        limits = boxes.new_tensor([[width, height, width, height] for height, width in
                                   (image.shape[:2] for image in images)])[:, None]  # [B, 1, 4]
        return torch.minimum(boxes.clamp(min=0), limits), scores, labels

    def __call__(self, images: str | Path | np.ndarray | Iterable[str | Path | np.ndarray],
                 batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
        """Detections for image files or RGB uint8 arrays (one or a list)."""
        if isinstance(images, (str, Path, np.ndarray)):
            images = [images]
        images = list(images)
        results = []
        for start in range(0, len(images), batch_size):
            chunk = [load_image(image) if not isinstance(image, np.ndarray) else image
                     for image in images[start:start + batch_size]]
            results.extend(self.detect_images(chunk))
        return results
