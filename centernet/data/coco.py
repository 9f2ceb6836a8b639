"""COCO-format detection data: a checked annotation file, images through a transform, CenterNet targets.

The annotation file is validated when the data set is built (no image is decoded then): bad JSON,
missing keys, unknown ids and empty files raise ``DataError`` naming the file and the entry. Boxes
are clipped to their image; zero-area and crowd boxes are skipped, with one warning line counting
each kind. Category ids of any values become contiguous labels ``0..C-1`` in id order.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from pycocotools.coco import COCO

from ..targets import build_targets
from .errors import DataError
from .images import load_image

TARGET_KEYS = ("heatmap", "wh", "offset", "index", "mask")
_REQUIRED_KEYS = {
    "images": ("id", "file_name", "width", "height"),
    "categories": ("id", "name"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
}


def read_coco_json(ann_file: str | Path) -> dict:
    """Parse and check a COCO detection file; returns its dict (``area``/``iscrowd`` filled in when
    absent, so that COCOeval can use it). Raises ``DataError`` naming the file and the problem."""
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise DataError(f"{ann_file}: annotation file not found")
    text = ann_file.read_text(encoding="utf-8")
    if not text.strip():
        raise DataError(f"{ann_file}: annotation file is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{ann_file}: invalid JSON: {error.msg} at line {error.lineno} "
                        f"column {error.colno}") from None
    if not isinstance(data, dict):
        raise DataError(f"{ann_file}: expected a JSON object with images, annotations and categories")
    for section, keys in _REQUIRED_KEYS.items():
        if not isinstance(data.get(section), list):
            raise DataError(f"{ann_file}: missing list '{section}'")
        for position, entry in enumerate(data[section]):
            missing = [key for key in keys if not isinstance(entry, dict) or key not in entry]
            if missing:
                raise DataError(f"{ann_file}: {section}[{position}] lacks {', '.join(map(repr, missing))}")
    if not data["images"]:
        raise DataError(f"{ann_file}: no images")
    if not data["categories"]:
        raise DataError(f"{ann_file}: no categories")
    for section in ("images", "categories", "annotations"):
        ids = [entry["id"] for entry in data[section]]
        if len(set(ids)) != len(ids):
            duplicate = next(i for i, count in Counter(ids).items() if count > 1)
            raise DataError(f"{ann_file}: {section} id {duplicate} appears more than once")

    image_ids = {image["id"] for image in data["images"]}
    cat_ids = {category["id"] for category in data["categories"]}
    for ann in data["annotations"]:
        if ann["image_id"] not in image_ids:
            raise DataError(f"{ann_file}: annotation {ann['id']} refers to unknown image id {ann['image_id']}")
        if ann["category_id"] not in cat_ids:
            raise DataError(f"{ann_file}: annotation {ann['id']} has unknown category id {ann['category_id']}")
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
            raise DataError(f"{ann_file}: annotation {ann['id']} bbox must be 4 numbers [x, y, w, h], got {bbox!r}")
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(bbox[2]) * float(bbox[3]))
    return data


def coco_from_dict(data: dict) -> COCO:
    """A pycocotools ``COCO`` index over an already loaded dict (without its prints)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _boxes_per_image(data: dict, label_of: dict[int, int], ann_file: Path) -> dict[int, tuple]:
    """image id -> (boxes xyxy [N, 4] float32 clipped to the image, labels [N] int64)."""
    sizes = {image["id"]: (float(image["width"]), float(image["height"])) for image in data["images"]}
    per_image: dict[int, tuple[list, list]] = {image_id: ([], []) for image_id in sizes}
    clipped = empty = crowd = 0
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0):
            crowd += 1
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        width, height = sizes[ann["image_id"]]
        box = [x, y, x + w, y + h]
        if not all(math.isfinite(v) for v in box) or w <= 0 or h <= 0:
            empty += 1
            continue
        inside = [min(max(box[0], 0.0), width), min(max(box[1], 0.0), height),
                  min(max(box[2], 0.0), width), min(max(box[3], 0.0), height)]
        if inside[2] <= inside[0] or inside[3] <= inside[1]:
            empty += 1
            continue
        clipped += inside != box
        per_image[ann["image_id"]][0].append(inside)
        per_image[ann["image_id"]][1].append(label_of[ann["category_id"]])
    if clipped or empty or crowd:
        warnings.warn(f"{ann_file}: clipped {clipped} boxes reaching outside their image; skipped {empty} "
                      f"boxes of zero area (or outside the image) and {crowd} crowd boxes (iscrowd=1)",
                      stacklevel=3)
    return {image_id: (np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64))
            for image_id, (boxes, labels) in per_image.items()}


class CocoDetection(torch.utils.data.Dataset):
    """Images and boxes of a COCO detection file, through ``transform``, with CenterNet targets.

    ``transform(image_rgb_uint8, boxes_xyxy, labels, rng) -> (image [3, H, W], boxes, labels,
    inverse_affine [2, 3])`` (``TrainTransform`` / ``EvalTransform``). Each item's randomness comes
    from a generator seeded by ``(seed, epoch, index)``, so a run is reproducible with any number of
    loader workers; call ``set_epoch`` at the start of each epoch.

    Attributes: ``coco`` (pycocotools index, for evaluation), ``image_ids`` (sorted),
    ``cat_ids`` (label -> COCO category id), ``class_names`` (label -> name), ``num_classes``.
    """

    def __init__(self, image_dir: str | Path, ann_file: str | Path, transform: Callable,
                 num_classes: int | None = None, with_targets: bool = False, stride: int = 4,
                 max_objs: int = 128, corrected_radius: bool = False, seed: int = 0):
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        self.transform = transform
        self.with_targets = with_targets
        self.stride, self.max_objs, self.corrected_radius = stride, max_objs, corrected_radius
        self.seed, self.epoch = seed, 0

        data = read_coco_json(self.ann_file)
        categories = sorted(data["categories"], key=lambda category: category["id"])
        self.cat_ids = [category["id"] for category in categories]
        self.class_names = [str(category["name"]) for category in categories]
        self.num_classes = len(categories) if num_classes is None else num_classes
        if self.num_classes < len(categories):
            raise DataError(f"{self.ann_file}: {len(categories)} categories, more than num_classes={num_classes}")
        label_of = {cat_id: label for label, cat_id in enumerate(self.cat_ids)}
        self._targets = _boxes_per_image(data, label_of, self.ann_file)
        self.coco = coco_from_dict(data)
        self.image_ids = sorted(self.coco.imgs)

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of an epoch (augmentations differ per epoch, reproducibly)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_path(self, index: int) -> Path:
        return self.image_dir / self.coco.imgs[self.image_ids[index]]["file_name"]

    def check_files(self) -> None:
        """Raise ``DataError`` naming the missing image files, if any (no decoding)."""
        missing = [str(self.image_path(i)) for i in range(len(self)) if not self.image_path(i).is_file()]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise DataError(f"{self.ann_file}: {len(missing)} of {len(self)} image files are missing: {shown}")

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        path = self.image_path(index)
        image = load_image(path)
        info = self.coco.imgs[image_id]
        if image.shape[:2] != (int(info["height"]), int(info["width"])):
            warnings.warn(f"{path}: image is {image.shape[1]}x{image.shape[0]} but {self.ann_file.name} says "
                          f"{info['width']}x{info['height']}", stacklevel=2)
        boxes, labels = self._targets[image_id]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        tensor, boxes, labels, inverse_affine = self.transform(image, boxes.copy(), labels.copy(), rng)
        item = {
            "image": torch.as_tensor(tensor, dtype=torch.float32),  # [3, H, W]
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),  # input pixels
            "labels": torch.as_tensor(labels, dtype=torch.int64),
            "image_id": int(image_id),
            "file": str(path),
            "orig_size": (int(image.shape[0]), int(image.shape[1])),
            "inverse_affine": torch.as_tensor(inverse_affine, dtype=torch.float32),  # [2, 3]
        }
        if self.with_targets:
            height, width = tensor.shape[1:]
            targets = build_targets(boxes, labels, self.num_classes,
                                    output_size=(height // self.stride, width // self.stride),
                                    stride=self.stride, max_objs=self.max_objs,
                                    corrected_radius=self.corrected_radius)
            item.update({key: torch.from_numpy(targets[key]) for key in TARGET_KEYS})
        return item


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch items of ``CocoDetection``.

    Images are zero-padded at the bottom/right to the largest size in the batch (so each image's
    affine stays valid) into ``image [B, 3, H, W]``; ``input_size`` keeps each unpadded (h, w).
    Targets are stacked (heatmaps padded the same way, ``index`` re-computed for the padded width);
    ``inverse_affine`` is stacked to ``[B, 2, 3]``; boxes, labels and the rest stay lists.
    """
    height = max(item["image"].shape[1] for item in batch)
    width = max(item["image"].shape[2] for item in batch)
    images = batch[0]["image"].new_zeros((len(batch), 3, height, width))  # [B, 3, H, W]
    for i, item in enumerate(batch):
        images[i, :, :item["image"].shape[1], :item["image"].shape[2]] = item["image"]
    out: dict[str, Any] = {
        "image": images,
        "input_size": [tuple(item["image"].shape[1:]) for item in batch],
        "inverse_affine": torch.stack([item["inverse_affine"] for item in batch]),
    }
    for key in ("boxes", "labels", "image_id", "file", "orig_size"):
        out[key] = [item[key] for item in batch]
    if "heatmap" in batch[0]:
        out.update(_collate_targets(batch))
    return out


def _collate_targets(batch: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    out_h = max(item["heatmap"].shape[1] for item in batch)
    out_w = max(item["heatmap"].shape[2] for item in batch)
    heatmap = batch[0]["heatmap"].new_zeros((len(batch), batch[0]["heatmap"].shape[0], out_h, out_w))
    index = []
    for i, item in enumerate(batch):
        item_h, item_w = item["heatmap"].shape[1:]
        heatmap[i, :, :item_h, :item_w] = item["heatmap"]
        index.append(item["index"] // item_w * out_w + item["index"] % item_w)  # same cell, padded width
    return {"heatmap": heatmap,  # [B, C, H/4, W/4]
            "wh": torch.stack([item["wh"] for item in batch]),  # [B, max_objs, 2]
            "offset": torch.stack([item["offset"] for item in batch]),  # [B, max_objs, 2]
            "index": torch.stack(index),  # [B, max_objs]
            "mask": torch.stack([item["mask"] for item in batch])}  # [B, max_objs]
