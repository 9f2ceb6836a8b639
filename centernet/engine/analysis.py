"""Where a detector goes wrong, class by class: the files written at the end of training and by
``centernet eval --analysis``::

    per_class_ap.csv          AP and AP50 of each class (and their mean, "all"), from COCOeval
    pr_curves.png             precision against recall at IoU 0.5, one curve per class, from COCOeval
    confusion_matrix.png/.csv predicted class against true class, with a background row and column

AP and the curves are pycocotools' (``COCOeval.eval["precision"]``, 101 recall points, area "all",
100 detections per image); only the confusion matrix, which no library gives for detection, is
computed here.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

from ..io import write_text
from ..viz import save_figure
from .evaluate import run_cocoeval

ANALYSIS_FILES = ["per_class_ap.csv", "pr_curves.png", "confusion_matrix.png", "confusion_matrix.csv"]
BACKGROUND = "background"


def class_names_of(coco_gt) -> list[str]:
    """The category names in label order (category id order, as ``CocoDetection`` numbers them)."""
    return [str(coco_gt.cats[cat_id]["name"]) for cat_id in sorted(coco_gt.cats)]


def per_class_ap(evaluator) -> list[dict]:
    """One row per class of a run ``COCOeval``: ``class``, ``instances`` (its ground-truth boxes
    without crowd), ``AP`` (IoU 0.5:0.95) and ``AP50``; NaN for a class without ground truth.

    The mean of the classes' AP is COCOeval's AP: both average the same precision entries.
    """
    precision = evaluator.eval["precision"]  # [T iou, R recall, K class, A area, M max dets]
    at_50 = int(np.argmin(np.abs(evaluator.params.iouThrs - 0.5)))
    coco_gt = evaluator.cocoGt
    rows = []
    for k, cat_id in enumerate(evaluator.params.catIds):
        anns = coco_gt.loadAnns(coco_gt.getAnnIds(catIds=[cat_id], iscrowd=False))
        curves = precision[:, :, k, 0, -1]  # [T, R]
        rows.append({"class": str(coco_gt.cats[cat_id]["name"]), "instances": len(anns),
                     "AP": _mean_valid(curves), "AP50": _mean_valid(curves[at_50])})
    return rows


def _mean_valid(precision: np.ndarray) -> float:
    """COCOeval's mean: over the entries it filled (-1 marks a class without ground truth)."""
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else math.nan


def mean_row(rows: list[dict]) -> dict:
    """The "all" row: instances summed, AP and AP50 averaged over the classes with ground truth."""
    scored = [row for row in rows if not math.isnan(row["AP"])]
    return {"class": "all", "instances": sum(row["instances"] for row in rows),
            "AP": float(np.mean([row["AP"] for row in scored])) if scored else math.nan,
            "AP50": float(np.mean([row["AP50"] for row in scored])) if scored else math.nan}


def format_per_class(rows: list[dict]) -> str:
    """The per-class table as printed (AP in percent; '-' for a class without ground truth)."""
    width = max(len("class"), *(len(row["class"]) for row in rows))
    lines = [f"{'class':<{width}} {'instances':>9} {'AP':>6} {'AP50':>6}"]
    for row in rows:
        values = " ".join("     -" if math.isnan(row[name]) else f"{100 * row[name]:6.2f}" for name in ("AP", "AP50"))
        lines.append(f"{row['class']:<{width}} {row['instances']:>9} {values}")
    return "\n".join(lines)


def ground_truth_by_image(coco_gt) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """image id -> (xyxy boxes [N, 4], labels [N]) of its non-crowd annotations."""
    label_of = {cat_id: label for label, cat_id in enumerate(sorted(coco_gt.cats))}
    result = {}
    for image_id in coco_gt.getImgIds():
        anns = [ann for ann in coco_gt.imgToAnns[image_id] if not ann.get("iscrowd", 0)]
        result[image_id] = (_xyxy([ann["bbox"] for ann in anns]),
                            np.array([label_of[ann["category_id"]] for ann in anns], np.int64))
    return result


def detections_by_image(detections: list[dict], cat_ids: Sequence[int],
                        image_ids: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """image id -> (xyxy boxes [N, 4], scores [N], labels [N]) of the COCO result dicts on the images
    ``image_ids`` (each of them present, empty when it has no detection)."""
    label_of = {cat_id: label for label, cat_id in enumerate(cat_ids)}
    grouped: dict[int, list[dict]] = {image_id: [] for image_id in image_ids}
    for detection in detections:
        if detection["image_id"] in grouped:
            grouped[detection["image_id"]].append(detection)
    return {image_id: (_xyxy([d["bbox"] for d in found]), np.array([d["score"] for d in found], np.float64),
                       np.array([label_of[d["category_id"]] for d in found], np.int64))
            for image_id, found in grouped.items()}


def _xyxy(xywh: list) -> np.ndarray:
    boxes = np.array(xywh, np.float64).reshape(-1, 4)  # [N, 4] xywh
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def confusion_matrix(coco_gt, detections: list[dict], score_threshold: float = 0.3,
                     iou_threshold: float = 0.5) -> np.ndarray:
    """Counts ``[C + 1, C + 1]``: row the predicted class, column the true class, the last row and
    column "background", as Ultralytics' ``ConfusionMatrix`` lays it out.

    In each image the detections scoring at least ``score_threshold`` are matched one to one to the
    ground-truth boxes of any class, best IoU first, where IoU >= ``iou_threshold``. A matched pair
    counts at (predicted class, true class): on the diagonal when the classes agree. A ground truth
    left unmatched is a miss (background row); a detection left unmatched is a false positive
    (background column).
    """
    num_classes = len(coco_gt.cats)
    matrix = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    truths = ground_truth_by_image(coco_gt)
    predictions = detections_by_image(detections, sorted(coco_gt.cats), list(truths))
    for image_id, (true_boxes, true_labels) in truths.items():
        boxes, scores, labels = predictions[image_id]
        keep = scores >= score_threshold
        boxes, labels = boxes[keep], labels[keep]
        missed, unmatched = np.ones(len(true_labels), bool), np.ones(len(labels), bool)
        for truth, detection in _match(true_boxes, boxes, iou_threshold):
            matrix[labels[detection], true_labels[truth]] += 1
            missed[truth] = unmatched[detection] = False
        np.add.at(matrix, (num_classes, true_labels[missed]), 1)
        np.add.at(matrix, (labels[unmatched], num_classes), 1)
    return matrix


def _match(true_boxes: np.ndarray, boxes: np.ndarray, iou_threshold: float) -> list[tuple[int, int]]:
    """Greedy one-to-one pairs (truth index, detection index), highest IoU first, IoU >= threshold."""
    if not len(true_boxes) or not len(boxes):
        return []
    iou = box_iou(torch.from_numpy(true_boxes), torch.from_numpy(boxes)).numpy()  # [G, D]
    truths, found = np.nonzero(iou >= iou_threshold)
    order = np.argsort(-iou[truths, found], kind="stable")
    pairs, used_truths, used_found = [], set(), set()
    for truth, detection in zip(truths[order].tolist(), found[order].tolist()):
        if truth not in used_truths and detection not in used_found:
            pairs.append((truth, detection))
            used_truths.add(truth)
            used_found.add(detection)
    return pairs


def save_per_class_csv(rows: list[dict], path: Path) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, ["class", "instances", "AP", "AP50"])
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if isinstance(value, float) and math.isnan(value)
                         else f"{value:.6g}" if isinstance(value, float) else value
                         for key, value in row.items()})
    write_text(path, text.getvalue())


def save_confusion_csv(matrix: np.ndarray, class_names: Sequence[str], path: Path) -> None:
    """Rows predicted, columns true; the corner cell names the axes."""
    names = [*class_names, BACKGROUND]
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["predicted \\ true", *names])
    for name, counts in zip(names, matrix.tolist()):
        writer.writerow([name, *counts])
    write_text(path, text.getvalue())


def plot_pr_curves(evaluator, rows: list[dict], path: Path) -> None:
    """Precision against recall at IoU 0.5 for each class with ground truth, and their mean."""
    plt = _pyplot()
    recall = evaluator.params.recThrs  # [R]
    at_50 = int(np.argmin(np.abs(evaluator.params.iouThrs - 0.5)))
    precision = evaluator.eval["precision"][at_50, :, :, 0, -1]  # [R, K]
    scored = [k for k, row in enumerate(rows) if not math.isnan(row["AP50"])]
    figure, axis = plt.subplots(figsize=(7, 5.5))
    for k in scored:
        axis.plot(recall, precision[:, k], linewidth=1, label=f"{rows[k]['class']} {rows[k]['AP50']:.3f}")
    if scored:
        mean_ap50 = float(np.mean([rows[k]["AP50"] for k in scored]))
        axis.plot(recall, precision[:, scored].mean(axis=1), color="black", linewidth=2.5,
                  label=f"all classes {mean_ap50:.3f}")
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_title("precision-recall at IoU 0.5 (legend: AP50)")
    axis.grid(alpha=0.3)
    if scored:
        axis.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    save_figure(figure, path, dpi=100)


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: Path,
                          score_threshold: float, iou_threshold: float) -> None:
    """Colour: the share of each true class (column) that went to each prediction; text: counts."""
    plt = _pyplot()
    names = [*class_names, BACKGROUND]
    shares = matrix / np.maximum(matrix.sum(axis=0, keepdims=True), 1)  # columns sum to 1
    size = max(5.0, 0.55 * len(names) + 2)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    if len(names) <= 30:
        for (row, column), count in np.ndenumerate(matrix):
            if count:
                axis.text(column, row, str(count), ha="center", va="center", fontsize=8,
                          color="white" if shares[row, column] > 0.5 else "black")
    axis.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    axis.set_yticks(range(len(names)), names, fontsize=8)
    axis.set_xlabel("true")
    axis.set_ylabel("predicted")
    axis.set_title(f"confusion matrix (score >= {score_threshold:g}, IoU >= {iou_threshold:g})")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="share of the true class")
    figure.tight_layout()
    save_figure(figure, path, dpi=100)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def analyze(coco_gt, detections: list[dict], out_dir: str | Path, score_threshold: float = 0.3,
            iou_threshold: float = 0.5) -> str:
    """Write :data:`ANALYSIS_FILES` into ``out_dir`` for ``detections`` (COCO result dicts) on the
    ground truth ``coco_gt`` (a pycocotools ``COCO``); returns the per-class table to print."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    evaluator = run_cocoeval(coco_gt, detections)
    rows = per_class_ap(evaluator)
    table = [*rows, mean_row(rows)]
    save_per_class_csv(table, out_dir / "per_class_ap.csv")
    plot_pr_curves(evaluator, rows, out_dir / "pr_curves.png")
    class_names = class_names_of(coco_gt)
    matrix = confusion_matrix(coco_gt, detections, score_threshold, iou_threshold)
    save_confusion_csv(matrix, class_names, out_dir / "confusion_matrix.csv")
    plot_confusion_matrix(matrix, class_names, out_dir / "confusion_matrix.png", score_threshold, iou_threshold)
    return format_per_class(table)
