"""TensorBoard logging of a run, in ``<run>/tensorboard``: the losses and learning rate of every
optimizer step, and at each validation the COCO metrics and a few drawn validation images.

Every event is indexed by the optimizer step (the validation's: the last step of its epoch), so a
resumed run drops the events logged after the checkpoint it resumed from (``purge_step``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

from ..data.coco import CocoDetection
from ..data.images import load_image
from ..viz import truth_beside_prediction
from .analysis import detections_by_image

MISSING = ("TensorBoard logging needs the tensorboard package: pip install centernet[tensorboard] "
           "(or turn it off: --no-tensorboard, train.tensorboard: false)")


def tensorboard_wanted(setting: bool | None) -> bool:
    """Whether a run logs to TensorBoard: ``setting`` True or False, or None for "when installed".
    True without the package raises ``ModuleNotFoundError`` saying how to install it."""
    installed = importlib.util.find_spec("tensorboard") is not None
    if setting and not installed:
        raise ModuleNotFoundError(MISSING, name="tensorboard")
    return installed if setting is None else bool(setting)


def validation_pictures(dataset: CocoDetection, detections: list[dict], count: int = 4,
                        score_threshold: float = 0.3, max_width: int = 800) -> dict[str, np.ndarray]:
    """File stem -> the first ``count`` images of ``dataset`` with their ground truth (left) and
    the ``detections`` (COCO result dicts) scoring at least ``score_threshold`` (right) drawn,
    shrunk to ``max_width`` pixels at most (a long run logs them at every validation)."""
    indices = range(min(count, len(dataset)))
    image_ids = [dataset.image_ids[index] for index in indices]
    found = detections_by_image(detections, dataset.cat_ids, image_ids)
    pictures = {}
    for index, image_id in zip(indices, image_ids):
        boxes, scores, labels = found[image_id]
        keep = scores >= score_threshold
        true_boxes, true_labels = dataset.original_boxes(index)
        path = dataset.image_path(index)
        picture = truth_beside_prediction(load_image(path), true_boxes, true_labels, boxes[keep], scores[keep],
                                          labels[keep], dataset.class_names)  # [H, W, 3]
        if picture.shape[1] > max_width:
            height = max(1, round(picture.shape[0] * max_width / picture.shape[1]))
            picture = cv2.resize(picture, (max_width, height), interpolation=cv2.INTER_AREA)
        pictures[path.stem] = picture
    return pictures


class TensorBoardLogger:
    """A ``SummaryWriter`` on ``log_dir`` with the run's tags: ``train/<loss name>``, ``train/lr``,
    ``val/<metric>`` and ``val_images/<file stem>``. ``steps_done``: optimizer steps already taken
    (a resumed run); the events logged after them are dropped."""

    def __init__(self, log_dir: str | Path, steps_done: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=steps_done + 1)

    def log_step(self, step: int, losses: dict[str, float], lr: float) -> None:
        for name, value in losses.items():
            self.writer.add_scalar(f"train/{name}", value, step)
        self.writer.add_scalar("train/lr", lr, step)

    def log_validation(self, step: int, metrics: dict[str, float], pictures: dict[str, np.ndarray]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(f"val/{name}", value, step)
        for name, picture in pictures.items():
            self.writer.add_image(f"val_images/{name}", picture, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
