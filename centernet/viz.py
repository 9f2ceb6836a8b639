"""Pictures: detections drawn on images, and the training curves of a run."""

from __future__ import annotations

import colorsys
import csv
from io import BytesIO
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .io import write_bytes


def class_color(label: int) -> tuple[int, int, int]:
    """A bright RGB colour per class, well spread over the hue circle (golden-ratio steps)."""
    hue = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray | None, labels: np.ndarray,
                    class_names: Sequence[str], thickness: int | None = None) -> np.ndarray:
    """A copy of the RGB ``image`` with each xyxy box, its class name and score drawn
    (``scores=None``: the class name alone, for ground-truth boxes)."""
    canvas = np.ascontiguousarray(image.copy())
    scale = max(canvas.shape[:2]) / 640
    thickness = thickness or max(1, round(2 * scale))
    font_scale = max(0.35, 0.5 * scale)
    labels = np.asarray(labels)
    scores = [None] * len(labels) if scores is None else np.asarray(scores)
    for box, score, label in zip(np.asarray(boxes), scores, labels):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        color = class_color(int(label))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
        text = class_names[int(label)] + ("" if score is None else f" {score:.2f}")
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        top = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else y1
        cv2.rectangle(canvas, (x1, top), (x1 + tw + 2, top + th + base + 2), color, -1)
        cv2.putText(canvas, text, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def truth_beside_prediction(image: np.ndarray, true_boxes: np.ndarray, true_labels: np.ndarray,
                            boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                            class_names: Sequence[str]) -> np.ndarray:
    """The RGB ``image`` twice, side by side: its ground-truth boxes (left) and the detections
    (right), separated by a white band."""
    truth = draw_detections(image, true_boxes, None, true_labels, class_names)
    prediction = draw_detections(image, boxes, scores, labels, class_names)
    band = np.full((image.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([truth, band, prediction], axis=1)  # [H, 2W + 4, 3]


def heatmap_overlay(image: np.ndarray, heatmaps: np.ndarray, opacity: float = 0.7) -> np.ndarray:
    """The RGB ``image`` with class heatmaps ``[C, H, W]`` (probabilities, same size) over it.

    Each pixel takes the colour of its strongest class (as ``draw_detections`` colours it), blended
    in proportion to that class's probability: peaks show bright, empty regions leave the image.
    """
    strongest = heatmaps.argmax(axis=0)  # [H, W]
    alpha = opacity * np.clip(heatmaps.max(axis=0), 0.0, 1.0)[:, :, None]  # [H, W, 1]
    palette = np.array([class_color(label) for label in range(len(heatmaps))], np.float32)  # [C, 3]
    blended = image.astype(np.float32) * (1 - alpha) + palette[strongest] * alpha
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def encode_image(image_rgb: np.ndarray, suffix: str = ".jpg") -> bytes:
    """The RGB ``image`` as the bytes of an image file of kind ``suffix`` (.jpg, .png, ...)."""
    ok, encoded = cv2.imencode(suffix, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"OpenCV cannot write {suffix!r} images")
    return encoded.tobytes()


def save_image(image_rgb: np.ndarray, path: str | Path) -> None:
    """Write the RGB ``image`` to ``path`` (kind from the suffix), atomically."""
    write_bytes(path, encode_image(image_rgb, Path(path).suffix))


def save_figure(figure, path: str | Path, dpi: int) -> Path:
    """Write a matplotlib ``figure`` to ``path`` (kind from the suffix), atomically, and close it."""
    import matplotlib.pyplot as plt

    buffer = BytesIO()
    try:
        figure.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi)
    finally:
        plt.close(figure)
    return write_bytes(path, buffer.getvalue())


def plot_metrics(csv_path: str | Path, out_dir: str | Path) -> list[Path]:
    """``losses.png`` (training losses per epoch) and ``map.png`` (validation AP/AP50) from metrics.csv."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return []
    out_dir = Path(out_dir)
    epochs = [int(row["epoch"]) for row in rows]
    written = []

    def column(name: str) -> tuple[list[int], list[float]]:
        pairs = [(e, float(row[name])) for e, row in zip(epochs, rows) if row.get(name)]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    figure, axes = plt.subplots(1, 4, figsize=(16, 3.5))
    for axis, name in zip(axes, ["loss", "heatmap_loss", "wh_loss", "offset_loss"]):
        axis.plot(*column(name), marker="o", markersize=3)
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    written.append(save_figure(figure, out_dir / "losses.png", dpi=90))

    figure, axis = plt.subplots(figsize=(6, 4))
    for name in ["AP", "AP50", "AP75"]:
        xs, ys = column(name)
        if xs:
            axis.plot(xs, ys, marker="o", markersize=3, label=name)
    axis.set_xlabel("epoch")
    axis.set_ylabel("COCO metric (val)")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    if axis.get_lines():
        axis.legend()
    figure.tight_layout()
    written.append(save_figure(figure, out_dir / "map.png", dpi=90))
    return written
