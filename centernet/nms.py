"""Merging the detections of several test scales: soft-NMS (the original CenterNet's) or NMS, per class.

The original CenterNet's multi-scale test (``CtdetDetector.merge_outputs``) concatenates each
class's detections over the scales, rescores them with Gaussian soft-NMS (sigma 0.5, boxes that
fall below 0.001 dropped) and keeps the 100 best over all classes. torchvision has NMS
(``batched_nms``) but no soft-NMS, so :func:`soft_nms` is written here.
"""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms, box_iou

MERGE_METHODS = ("soft-nms", "nms")


def soft_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor | None = None,
             sigma: float = 0.5, score_threshold: float = 0.001, offset: float = 0.0
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian soft-NMS (Bodla et al. 2017) of ``boxes [N, 4]`` xyxy with ``scores [N]``.

    Greedy, as the original's ``soft_nms(method=2)``: the best remaining box is kept, and every
    remaining box overlapping it has its score multiplied by ``exp(-IoU^2 / sigma)``; a box whose
    score so falls below ``score_threshold`` is dropped. With ``labels [N]`` boxes of different
    labels never overlap (soft-NMS per class). ``offset=1`` measures sides as ``x2 - x1 + 1`` like
    the original (pixel-index boxes); the default 0 is torchvision's convention.

    Returns ``keep [M]`` (indices into ``boxes``, highest final score first) and the final
    ``scores [M]``. The original's multi-scale merge ignores the count its ``soft_nms`` returns and
    so keeps stale copies of the dropped rows; here dropped boxes are gone.
    """
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"soft_nms: expected boxes [N, 4] and scores [N], got {tuple(boxes.shape)} "
                         f"and {tuple(scores.shape)}")
    corners = boxes.float() + boxes.new_tensor([0.0, 0.0, offset, offset]).float()
    overlap = box_iou(corners, corners).nan_to_num_(0.0)  # [N, N]; 0/0 of two empty boxes -> 0
    if labels is not None:
        overlap *= labels[:, None] == labels[None, :]
    scores = scores.float().clone()
    remaining = torch.arange(len(scores), device=scores.device)
    keep = []
    while remaining.numel():
        best = remaining[scores[remaining].argmax()]
        keep.append(best)
        remaining = remaining[remaining != best]
        iou = overlap[best, remaining]  # [R]
        scores[remaining] *= torch.exp(-iou * iou / sigma)
        remaining = remaining[(iou <= 0) | (scores[remaining] >= score_threshold)]
    keep = torch.stack(keep) if keep else remaining
    return keep, scores[keep]


def merge_detections(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                     method: str = "soft-nms", max_detections: int = 100
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's detections pooled over scales, ``boxes [N, 4]``, ``scores [N]``, ``labels [N]``,
    merged per class by ``method`` ("soft-nms": :func:`soft_nms`, which rescores; "nms":
    torchvision's at IoU 0.5), then the ``max_detections`` best over all classes, sorted by score."""
    if method == "soft-nms":
        keep, merged_scores = soft_nms(boxes, scores, labels)
    elif method == "nms":
        keep = batched_nms(boxes.float(), scores.float(), labels, iou_threshold=0.5)
        merged_scores = scores[keep]
    else:
        raise ValueError(f"merge method {method!r}: choose one of {', '.join(MERGE_METHODS)}")
    keep = keep[:max_detections]  # sorted, best first
    return boxes[keep], merged_scores[:max_detections].to(scores.dtype), labels[keep]
