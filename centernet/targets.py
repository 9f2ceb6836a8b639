"""Training targets: boxes of one image -> center heatmap, sizes, sub-pixel offsets.

Follows PaddleDetection's ``Gt2CenterNetTarget`` (the published weights were trained with it),
which itself follows the original CenterNet: one gaussian per object, drawn at the object's
integer center on its class channel, plus per-object regression targets stored in fixed slots.
"""

from __future__ import annotations

import numpy as np


def gaussian_radius(height, width, min_overlap: float = 0.7, corrected: bool = False):
    """Radius of the gaussian around an object center, from CornerNet's three-case formula.

    A box of ``height`` x ``width`` whose two corners are moved by ``r`` should keep an IoU of
    at least ``min_overlap`` with the original box. Three layouts give three quadratics
    ``a r^2 - b r + c = 0`` (case 1: one corner in, one out; case 2: both corners in; case 3:
    both out) and the radius is the smallest of their roots.

    ``corrected=False`` (default) reproduces the CornerNet / original CenterNet /
    PaddleDetection code, which the published weights were trained with: every case takes
    ``(b + sqrt(b^2 - 4ac)) / 2``, i.e. the larger root and without dividing by ``2a``. Case 3
    then nearly always wins and the radius comes out near 0.27 x the side of a square box.

    ``corrected=True`` gives the mathematically meant radius (as mmdetection computes it):
    ``(b - sqrt(b^2 - 4ac)) / (2a)`` for cases 1 and 2 and ``(b + sqrt(b^2 - 4ac)) / (2a)``
    for case 3 (whose ``b`` carries the opposite sign). It is much smaller: near 0.08 x the
    side of a square box, about a third of the quirky radius.

    Accepts scalars or numpy arrays (broadcast together); returns float64 of the same shape.
    """
    height = np.asarray(height, dtype=np.float64)
    width = np.asarray(width, dtype=np.float64)

    # case 1: one corner inside the box, the other outside
    a1 = 1.0
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    sqrt1 = np.sqrt(b1**2 - 4 * a1 * c1)
    # case 2: both corners inside the box
    a2 = 4.0
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    sqrt2 = np.sqrt(b2**2 - 4 * a2 * c2)
    # case 3: both corners outside the box
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    sqrt3 = np.sqrt(b3**2 - 4 * a3 * c3)

    if corrected:
        radii = ((b1 - sqrt1) / (2 * a1), (b2 - sqrt2) / (2 * a2), (b3 + sqrt3) / (2 * a3))
    else:
        radii = ((b1 + sqrt1) / 2, (b2 + sqrt2) / 2, (b3 + sqrt3) / 2)
    return np.minimum(np.minimum(radii[0], radii[1]), radii[2])


def draw_gaussian(heatmap: np.ndarray, center, radius: int) -> np.ndarray:
    """Draw a gaussian peak of height 1 at integer ``center (x, y)`` into ``heatmap [H, W]``.

    The kernel spans ``2 * radius + 1`` pixels with ``sigma = (2 * radius + 1) / 6`` (the
    "umich" gaussian of the original CenterNet); it is clipped at the map borders and merged
    with what is already there by element-wise maximum, so overlapping objects of one class
    keep the higher value. A center outside the map draws nothing. Modifies and returns
    ``heatmap``.
    """
    x, y = int(center[0]), int(center[1])
    radius = int(radius)
    height, width = heatmap.shape
    if not (0 <= x < width and 0 <= y < height):
        return heatmap
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)

    sigma = (2 * radius + 1) / 6
    dx = np.arange(-left, right, dtype=np.float64)[None, :]  # [1, window_w]
    dy = np.arange(-top, bottom, dtype=np.float64)[:, None]  # [window_h, 1]
    gaussian = np.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))  # [window_h, window_w]

    window = heatmap[y - top:y + bottom, x - left:x + right]
    np.maximum(window, gaussian, out=window, casting="unsafe")
    return heatmap


def build_targets(boxes, labels, num_classes: int, output_size, stride: int = 4,
                  max_objs: int = 128, corrected_radius: bool = False) -> dict[str, np.ndarray]:
    """CenterNet targets for one image.

    Args:
        boxes: ``[N, 4]`` xyxy in input-image pixels (the network's input, after the affine).
        labels: ``[N]`` class indices in ``[0, num_classes)``.
        num_classes: number of heatmap channels.
        output_size: ``(h_out, w_out)`` of the output map (input size // stride).
        stride: input pixels per output pixel.
        max_objs: number of object slots; only the first ``max_objs`` boxes are used, the rest
            are dropped (PaddleDetection would fail on them instead).
        corrected_radius: use the corrected gaussian radius (see :func:`gaussian_radius`).

    Boxes are divided by ``stride``, clipped to ``[0, w_out - 1]`` / ``[0, h_out - 1]`` and
    skipped when their width or height is not positive after clipping. Slot ``i`` belongs to
    box ``i``, so a skipped box leaves its slot empty (mask 0), as in PaddleDetection.

    Returns a dict of numpy arrays:
        ``heatmap [C, h_out, w_out]`` float32: a gaussian per object at its integer center,
        ``wh [max_objs, 2]`` float32: box (width, height) in output pixels,
        ``offset [max_objs, 2]`` float32: center minus integer center (x, y), in [0, 1),
        ``index [max_objs]`` int64: ``y_int * w_out + x_int``,
        ``mask [max_objs]`` float32: 1 for a filled slot.
    """
    h_out, w_out = (int(size) for size in output_size)
    boxes = np.asarray(boxes, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"build_targets: boxes must have shape [N, 4], got {boxes.shape}")
    if len(labels) != len(boxes):
        raise ValueError(f"build_targets: {len(boxes)} boxes but {len(labels)} labels")
    if not np.isfinite(boxes).all():
        raise ValueError("build_targets: boxes contain NaN or infinite values")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"build_targets: labels must lie in [0, {num_classes}), "
                         f"got values from {labels.min()} to {labels.max()}")

    boxes = (boxes[:max_objs] / stride).astype(np.float32)  # [N, 4] output pixels
    labels = labels[:max_objs].astype(np.int64)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w_out - 1)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h_out - 1)
    box_w = boxes[:, 2] - boxes[:, 0]
    box_h = boxes[:, 3] - boxes[:, 1]
    valid = (box_w > 0) & (box_h > 0)

    centers = np.stack([boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]], axis=1) / 2  # [N, 2]
    centers_int = centers.astype(np.int64)  # truncation; centers are >= 0 after clipping
    radii = gaussian_radius(np.ceil(box_h[valid]), np.ceil(box_w[valid]), corrected=corrected_radius)
    radii = np.maximum(0, radii.astype(np.int64))

    heatmap = np.zeros((num_classes, h_out, w_out), dtype=np.float32)
    for label, center, radius in zip(labels[valid], centers_int[valid], radii):
        draw_gaussian(heatmap[label], center, radius)

    slots = np.flatnonzero(valid)
    wh = np.zeros((max_objs, 2), dtype=np.float32)
    offset = np.zeros((max_objs, 2), dtype=np.float32)
    index = np.zeros((max_objs,), dtype=np.int64)
    mask = np.zeros((max_objs,), dtype=np.float32)
    wh[slots] = np.stack([box_w, box_h], axis=1)[valid]
    offset[slots] = (centers - centers_int)[valid]
    index[slots] = centers_int[valid, 1] * w_out + centers_int[valid, 0]
    mask[slots] = 1.0
    return {"heatmap": heatmap, "wh": wh, "offset": offset, "index": index, "mask": mask}
