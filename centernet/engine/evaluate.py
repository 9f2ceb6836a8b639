"""COCO evaluation: run a ``Detector`` over a ``CocoDetection`` split and score it with pycocotools."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..data.coco import CocoDetection, coco_from_dict
from ..inference import BaseDetector
from ..io import output_group

METRIC_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


class _OriginalImages(Dataset):
    """The untransformed images of a ``CocoDetection`` with their ids: what ``Detector`` takes, at
    any test scale (the data set's own transform is not used)."""

    def __init__(self, dataset: CocoDetection):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray]:
        return self.dataset.image_ids[index], self.dataset.load_image(index)


def _as_lists(items: list[tuple[int, np.ndarray]]) -> tuple[list[int], list[np.ndarray]]:
    ids, images = zip(*items)
    return list(ids), list(images)


def evaluate(detector: BaseDetector, dataset: CocoDetection, batch_size: int = 4, workers: int = 0,
             progress: bool = True) -> tuple[dict[str, float], list[dict]]:
    """COCO metrics (AP, AP50, ... as fractions) and the detections in COCO result format.

    The images go through ``detector.detect_images`` as prediction's do (its transform, flip and
    test scales); ``workers`` processes decode them."""
    if len(detector.class_names) > len(dataset.cat_ids):
        raise ValueError(f"{dataset.ann_file}: {len(dataset.cat_ids)} categories, fewer than the model's "
                         f"{len(detector.class_names)} classes; evaluate it on a data set of its classes")
    loader = DataLoader(_OriginalImages(dataset), batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=_as_lists)
    detections = []
    for image_ids, images in tqdm(loader, desc="eval", leave=False, disable=not progress, dynamic_ncols=True):
        for image_id, result in zip(image_ids, detector.detect_images(images)):
            xywh = result["boxes"].clone()
            xywh[:, 2:] -= xywh[:, :2]
            for box, score, label in zip(xywh.tolist(), result["scores"].tolist(), result["labels"].tolist()):
                detections.append({"image_id": int(image_id), "category_id": dataset.cat_ids[label],
                                   "bbox": [round(v, 3) for v in box], "score": round(score, 5)})
    return coco_metrics(dataset.coco, detections), detections


def coco_metrics(coco_gt, detections: list[dict]) -> dict[str, float]:
    """pycocotools' bbox metrics; all zero when there is no detection at all."""
    evaluator = run_cocoeval(coco_gt, detections)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.summarize()
    return {name: float(max(value, 0.0)) for name, value in zip(METRIC_NAMES, evaluator.stats)}


def run_cocoeval(coco_gt, detections: list[dict]):
    """pycocotools' ``COCOeval`` of ``detections`` (COCO result dicts), evaluated and accumulated
    (its ``eval["precision"]`` filled), without its prints. No detection at all scores zero."""
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        if detections:
            coco_dt = coco_gt.loadRes(detections)
        else:  # loadRes refuses an empty list
            coco_dt = coco_from_dict({**coco_gt.dataset, "annotations": []})
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def format_metrics(metrics: dict[str, float]) -> str:
    names = METRIC_NAMES[:6]
    header = " | ".join(f"{name:>6}" for name in names)
    values = " | ".join(f"{100 * metrics[name]:6.2f}" for name in names)
    return f"{header}\n{values}"


def save_metrics(metrics: dict[str, float], detections: list[dict], out_dir: str | Path) -> Path:
    """Write ``out_dir/eval.json`` and ``out_dir/detections.json``, both or neither (an earlier
    evaluation's files stay whole when the disk is full); returns the eval.json path."""
    out_dir = Path(out_dir)
    with output_group() as out:
        out.write_json(out_dir / "detections.json", detections)
        return out.write_json(out_dir / "eval.json", metrics, indent=1)

