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
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from pycocotools.coco import COCO

from ..io import read_text
from ..targets import build_targets
from .errors import DataError
from .images import load_image

TARGET_KEYS = ("heatmap", "wh", "offset", "index", "mask")
# The keys every entry of a COCO file's sections must have (check_coco_dict and data.check ask)
REQUIRED_KEYS = {
    "images": ("id", "file_name", "width", "height"),
    "categories": ("id", "name"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
}


def read_coco_json(ann_file: str | Path) -> dict:
    """Parse and check a COCO detection file; returns its dict (``area``/``iscrowd`` filled in when
    absent, so that COCOeval can use it). Raises ``DataError`` naming the file and the problem."""
    ann_file = Path(ann_file)
    if ann_file.is_dir():
        raise DataError(f"{ann_file}: is a folder, not an annotation file")
    if not ann_file.is_file():
        raise DataError(f"{ann_file}: annotation file not found")
    text = read_text(ann_file, DataError)
    if not text.strip():
        raise DataError(f"{ann_file}: annotation file is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{ann_file}: invalid JSON: {error.msg} at line {error.lineno} "
                        f"column {error.colno}") from None
    return check_coco_dict(data, ann_file)


def check_coco_dict(data: Any, ann_file: str | Path) -> dict:
    """The checks of :func:`read_coco_json` on an already parsed dict (``ann_file`` names it)."""
    if not isinstance(data, dict):
        raise DataError(f"{ann_file}: expected a JSON object with images, annotations and categories")
    for section, keys in REQUIRED_KEYS.items():
        entries = data.get(section)
        if not isinstance(entries, list):
            raise DataError(f"{ann_file}: missing list '{section}'")
        bad = next((i for i, entry in enumerate(entries) if not isinstance(entry, dict)), None)
        if bad is not None:
            raise DataError(f"{ann_file}: {section}[{bad}] is not an object")
        for key in keys:
            bad = next((i for i, entry in enumerate(entries) if key not in entry), None)
            if bad is not None:
                raise DataError(f"{ann_file}: {section}[{bad}] lacks '{key}'")
    if not data["images"]:
        raise DataError(f"{ann_file}: no images")
    if not data["categories"]:
        raise DataError(f"{ann_file}: no categories")
    for section in ("images", "categories", "annotations"):
        bad = next((entry["id"] for entry in data[section] if not is_id(entry["id"])), None)
        if bad is not None:
            raise DataError(f"{ann_file}: {section} id {bad!r} is not an integer")
        ids = [entry["id"] for entry in data[section]]
        if len(set(ids)) != len(ids):
            duplicate = next(i for i, count in Counter(ids).items() if count > 1)
            raise DataError(f"{ann_file}: {section} id {duplicate} appears more than once")
    for problem in duplicate_names(data):
        raise DataError(f"{ann_file}: {problem}")

    annotations = data["annotations"]
    image_ids = {image["id"] for image in data["images"]}
    cat_ids = {category["id"] for category in data["categories"]}
    for ann in (ann for ann in annotations if not is_id(ann["image_id"]) or ann["image_id"] not in image_ids):
        raise DataError(f"{ann_file}: annotation {ann['id']} refers to unknown image id {ann['image_id']!r}")
    for ann in (ann for ann in annotations if not is_id(ann["category_id"]) or ann["category_id"] not in cat_ids):
        raise DataError(f"{ann_file}: annotation {ann['id']} has unknown category id {ann['category_id']!r}")
    for ann in (ann for ann in annotations if not is_bbox(ann["bbox"])):
        raise DataError(f"{ann_file}: annotation {ann['id']} bbox must be 4 numbers [x, y, w, h], got {ann['bbox']!r}")
    for ann in annotations:
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
    return data


def is_id(value: Any) -> bool:
    """A COCO id: an integer (not a bool, a string or a list)."""
    return type(value) is int


def duplicate_names(data: dict) -> list[str]:
    """Problems of a well-formed COCO dict that its ids do not show: one image file listed under
    several image ids, several categories with one name."""
    problems = []
    for section, field, what in (("images", "file_name", "image file"), ("categories", "name", "category name")):
        ids_of: dict[Any, list] = {}
        for entry in data[section]:
            if isinstance(entry[field], str):
                ids_of.setdefault(entry[field], []).append(entry["id"])
        problems += [f"{what} {value!r} appears under {section} ids {', '.join(map(str, ids))}"
                     for value, ids in ids_of.items() if len(ids) > 1]
    return problems


def is_bbox(bbox: Any) -> bool:
    """Whether ``bbox`` is a COCO box as json gives it: a list of four ints or floats."""
    return (type(bbox) is list and len(bbox) == 4
            and all(type(v) is float or type(v) is int for v in bbox))


def coco_from_dict(data: dict) -> COCO:
    """A pycocotools ``COCO`` index over an already loaded dict (without its prints)."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _boxes_per_image(data: dict, label_of: dict[int, int], ann_file: Path) -> dict[int, tuple]:
    """image id -> (boxes xyxy [N, 4] float32 clipped to the image, labels [N] int64)."""
    annotations = [ann for ann in data["annotations"] if not ann.get("iscrowd", 0)]
    crowd = len(data["annotations"]) - len(annotations)
    image_ids = [image["id"] for image in data["images"]]
    position = {image_id: i for i, image_id in enumerate(image_ids)}
    sizes = np.array([(image["width"], image["height"]) for image in data["images"]], np.float64)  # [I, 2]
    which = np.array([position[ann["image_id"]] for ann in annotations], np.int64)  # [N]
    labels = np.array([label_of[ann["category_id"]] for ann in annotations], np.int64)  # [N]
    boxes = np.array([ann["bbox"] for ann in annotations], np.float64).reshape(-1, 4)  # [N, 4] xywh
    boxes[:, 2:] += boxes[:, :2]  # [N, 4] xyxy
    inside = np.clip(boxes, 0, np.tile(sizes[which], 2))
    with np.errstate(invalid="ignore"):
        keep = (inside[:, 2] > inside[:, 0]) & (inside[:, 3] > inside[:, 1]) & np.isfinite(boxes).all(axis=1)
    clipped = int((keep & (inside != boxes).any(axis=1)).sum())
    empty = len(annotations) - int(keep.sum())
    if clipped or empty or crowd:
        warnings.warn(f"{ann_file}: clipped {clipped} boxes reaching outside their image; skipped {empty} "
                      f"boxes of zero area (or outside the image) and {crowd} crowd boxes (iscrowd=1)",
                      stacklevel=3)
    order = np.argsort(which[keep], kind="stable")  # group by image, file order within an image
    which, labels, inside = which[keep][order], labels[keep][order], inside[keep][order].astype(np.float32)
    bounds = np.searchsorted(which, np.arange(len(image_ids) + 1))
    return {image_id: (inside[bounds[i]:bounds[i + 1]], labels[bounds[i]:bounds[i + 1]])
            for i, image_id in enumerate(image_ids)}


class CocoDetection(torch.utils.data.Dataset):
    """Images and boxes of a COCO detection file, through ``transform``, with CenterNet targets.

    ``transform(image_rgb_uint8, boxes_xyxy, labels, rng) -> (image [3, H, W], boxes, labels,
    inverse_affine [2, 3])`` (``TrainTransform`` / ``EvalTransform``). Each item's randomness comes
    from a generator seeded by ``(seed, epoch, index)``, so a run is reproducible with any number of
    loader workers; call ``set_epoch`` at the start of each epoch.

    ``annotations``: the already parsed (e.g. cleaned by ``data.check``) content of ``ann_file``.

    ``skip_empty=True`` leaves out images without a usable box, as PaddleDetection's COCODataSet
    does by default (``allow_empty=False``) for training and evaluation alike; by default they are
    kept (negatives in training, false positives counted in evaluation).

    Attributes: ``coco`` (pycocotools index, for evaluation), ``image_ids`` (sorted),
    ``cat_ids`` (label -> COCO category id), ``class_names`` (label -> name), ``num_classes``.
    """

    def __init__(self, image_dir: str | Path, ann_file: str | Path, transform: Callable,
                 num_classes: int | None = None, with_targets: bool = False, stride: int = 4,
                 max_objs: int = 128, corrected_radius: bool = False, seed: int = 0, skip_empty: bool = False,
                 annotations: dict | None = None):
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        if self.image_dir.exists() and not self.image_dir.is_dir():
            raise DataError(f"{self.image_dir}: is a file, not the folder of the images of {self.ann_file}")
        self.transform = transform
        self.with_targets = with_targets
        self.stride, self.max_objs, self.corrected_radius = stride, max_objs, corrected_radius
        self.seed, self.epoch = seed, 0

        data = read_coco_json(self.ann_file) if annotations is None else check_coco_dict(annotations, self.ann_file)
        categories = sorted(data["categories"], key=lambda category: category["id"])
        self.cat_ids = [category["id"] for category in categories]
        self.class_names = [str(category["name"]) for category in categories]
        self.num_classes = len(categories) if num_classes is None else num_classes
        if self.num_classes < len(categories):
            raise DataError(f"{self.ann_file}: {len(categories)} categories, more than num_classes={num_classes}")
        label_of = {cat_id: label for label, cat_id in enumerate(self.cat_ids)}
        self._boxes = _boxes_per_image(data, label_of, self.ann_file)
        self.coco = coco_from_dict(data)
        self.image_ids = sorted(image_id for image_id in self.coco.imgs
                                if not skip_empty or len(self._boxes[image_id][1]))
        if not self.image_ids:
            raise DataError(f"{self.ann_file}: no image has a usable box (skip_empty=True)")

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of an epoch (augmentations differ per epoch, reproducibly)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_path(self, index: int) -> Path:
        return self.image_dir / self.coco.imgs[self.image_ids[index]]["file_name"]

    def original_boxes(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The usable boxes of item ``index`` in original-image pixels: (xyxy [N, 4] float32, labels [N])."""
        boxes, labels = self._boxes[self.image_ids[index]]
        return boxes.copy(), labels.copy()

    def check_files(self) -> None:
        """Raise ``DataError`` naming the missing image files, if any (no decoding)."""
        missing = [str(self.image_path(i)) for i in range(len(self)) if not self.image_path(i).is_file()]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise DataError(f"{self.ann_file}: {len(missing)} of {len(self)} image files are missing: {shown}")

    def load_image(self, index: int) -> np.ndarray:
        """Item ``index``'s image as RGB uint8 ``[H, W, 3]``, untransformed (a warning when its size
        is not the annotation file's)."""
        path = self.image_path(index)
        image = load_image(path)
        info = self.coco.imgs[self.image_ids[index]]
        if image.shape[:2] != (int(info["height"]), int(info["width"])):
            warnings.warn(f"{path}: image is {image.shape[1]}x{image.shape[0]} but {self.ann_file.name} says "
                          f"{info['width']}x{info['height']}", stacklevel=3)
        return image

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        path = self.image_path(index)
        image = self.load_image(index)
        boxes, labels = self.original_boxes(index)
        rng = np.random.default_rng((self.seed, self.epoch, index))
        tensor, boxes, labels, inverse_affine = self.transform(image, boxes, labels, rng)
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


def pad_images(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack [3, H, W] images, zero-padding bottom/right to the largest size (affines stay valid)."""
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    batch = images[0].new_zeros((len(images), images[0].shape[0], height, width))  # [B, 3, H, W]
    for i, image in enumerate(images):
        batch[i, :, :image.shape[1], :image.shape[2]] = image
    return batch


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch items of ``CocoDetection``.

    Images are zero-padded at the bottom/right to the largest size in the batch (so each image's
    affine stays valid) into ``image [B, 3, H, W]``; ``input_size`` keeps each unpadded (h, w).
    Targets are stacked (heatmaps padded the same way, ``index`` re-computed for the padded width);
    ``inverse_affine`` is stacked to ``[B, 2, 3]``; boxes, labels and the rest stay lists.
    """
    out: dict[str, Any] = {
        "image": pad_images([item["image"] for item in batch]),  # [B, 3, H, W]
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
