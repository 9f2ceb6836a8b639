"""From the model's raw maps to boxes: peaks, top-K, boxes; flip test; mapping back to the image.

``decode`` is the one decoder used by prediction, evaluation and inside the exported ONNX graph,
so it is written with tensor operations only (no Python loops over data, no numpy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _gather_at(feature: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """``feature [B, D, H, W]`` read at flat positions ``position [B, K]`` -> ``[B, K, D]``."""
    flat = feature.flatten(2)  # [B, D, H*W]
    index = position.unsqueeze(1).expand(-1, flat.shape[1], -1)  # [B, D, K]
    return flat.gather(2, index).transpose(1, 2)  # [B, K, D]


def decode(heatmap: torch.Tensor, wh: torch.Tensor, offset: torch.Tensor, k: int = 100,
           apply_sigmoid: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The K best detections of each image, in OUTPUT-MAP coordinates.

    Args:
        heatmap: ``[B, C, H, W]`` logits (or probabilities with ``apply_sigmoid=False``).
        wh: ``[B, 2, H, W]`` box width and height.
        offset: ``[B, 2, H, W]`` sub-pixel (x, y) offset of the center.
        k: detections per image; fewer when the map has fewer than ``k`` class-positions.
        apply_sigmoid: turn logits into scores first.

    Peaks are the scores equal to their 3x3 max-pooled neighbourhood (other scores are set to
    0); the K highest over all classes and positions are kept, sorted by score. The box of a
    peak at integer ``(x, y)`` is centered at ``(x + offset_x, y + offset_y)`` with the size read
    at the same pixel. Multiply the boxes by the model's stride (4) for input pixels, then map
    them with :func:`affine_boxes` to the original image.

    PaddleDetection takes the top-K per class first and then over those; the result is the same
    set in the same order (equal scores may come in another order).

    Returns ``boxes [B, K, 4]`` xyxy, ``scores [B, K]`` and ``labels [B, K]`` int64.
    """
    batch, num_classes, _, width = heatmap.shape
    scores = heatmap.sigmoid() if apply_sigmoid else heatmap
    # channels-last: 3x3 max-pooling is several times faster on CPU in this layout, and the
    # flattening below is then a view
    scores = scores.contiguous(memory_format=torch.channels_last)
    pooled = F.max_pool2d(scores, kernel_size=3, stride=1, padding=1)
    scores = scores * (pooled == scores).to(scores.dtype)  # [B, C, H, W], non-peaks 0

    flat = scores.permute(0, 2, 3, 1).reshape(batch, -1)  # [B, H*W*C]
    # K clamped to the map's size. While a graph is traced for export, a shape entry is a 0-dim
    # tensor (a Python int otherwise), so the exported graph clamps K at run time, for any input size
    candidates = flat.shape[1]
    k = candidates.clamp(max=k) if isinstance(candidates, torch.Tensor) else min(candidates, k)
    top_scores, top_index = flat.topk(k, dim=1)  # [B, K]
    position = torch.div(top_index, num_classes, rounding_mode="floor")  # [B, K] flat y * W + x
    labels = top_index - position * num_classes
    ys = torch.div(position, width, rounding_mode="floor")
    xs = position - ys * width

    center_offset = _gather_at(offset, position)  # [B, K, 2]
    size = _gather_at(wh, position)  # [B, K, 2] (w, h)
    center = torch.stack([xs, ys], dim=-1).to(center_offset.dtype) + center_offset  # [B, K, 2]
    boxes = torch.cat([center - size / 2, center + size / 2], dim=-1)  # [B, K, 4]
    return boxes, top_scores, labels


def flip_merge(outputs: dict[str, torch.Tensor], flipped_outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Merge the model's raw outputs on images and on their horizontal mirror (flip test).

    PaddleDetection has no flip test for CenterNet; this is the original CenterNet's: the
    mirrored pass's maps are flipped back, the heatmap PROBABILITIES (after sigmoid) are
    averaged, the sizes are averaged, and the offset is taken from the unflipped pass alone.

    The merged heatmap is returned as logits, ``logit((sigmoid(a) + sigmoid(b)) / 2)`` computed
    stably in log space, so the result is a raw dict like the model's and goes to
    :func:`decode` unchanged. Keys other than heatmap / wh / offset come from ``outputs``.
    """
    merged = dict(outputs)
    heatmap = outputs["heatmap"].float()
    heatmap_mirror = flipped_outputs["heatmap"].float().flip(-1)
    log_positive = torch.logaddexp(F.logsigmoid(heatmap), F.logsigmoid(heatmap_mirror))
    log_negative = torch.logaddexp(F.logsigmoid(-heatmap), F.logsigmoid(-heatmap_mirror))
    merged["heatmap"] = (log_positive - log_negative).to(outputs["heatmap"].dtype)

    merged["wh"] = (outputs["wh"] + flipped_outputs["wh"].flip(-1)) / 2  # mirroring leaves (w, h) alone
    merged["offset"] = outputs["offset"]
    return merged


def affine_boxes(boxes: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Map xyxy ``boxes [B, K, 4]`` through per-image 2x3 affine ``matrix [B, 2, 3]``.

    All four corners are mapped and the result is their enclosing box, so a mirroring or
    rotating matrix still yields ``x1 <= x2`` and ``y1 <= y2`` (for the scale-and-shift
    matrices of the evaluation transform this equals mapping the two corners).
    """
    x1, y1, x2, y2 = boxes.unbind(-1)  # each [B, K]
    corners = torch.stack([torch.stack([x1, y1], -1), torch.stack([x2, y1], -1),
                           torch.stack([x1, y2], -1), torch.stack([x2, y2], -1)], dim=2)  # [B, K, 4, 2]
    matrix = matrix.to(boxes.dtype)
    linear, shift = matrix[:, None, :, :2], matrix[:, None, None, :, 2]  # [B, 1, 2, 2], [B, 1, 1, 2]
    mapped = corners @ linear.transpose(-1, -2) + shift  # [B, K, 4, 2]
    return torch.cat([mapped.amin(dim=2), mapped.amax(dim=2)], dim=-1)  # [B, K, 4]
