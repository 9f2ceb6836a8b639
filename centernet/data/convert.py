"""VOC and YOLO folders as COCO json: format detection, conversion and the splits ``centernet train`` reads.

Both readers give the in-memory COCO dict that ``CocoDetection`` takes, so every later check (ids,
boxes, image files, ``centernet check-data``) is the same as for a COCO file.
"""

from __future__ import annotations

from pathlib import Path

from ..io import write_json
from .coco import check_coco_dict
from .errors import DataError
from .voc import read_class_names, read_voc
from .yolo import read_yolo

FORMATS = ("voc", "yolo")
_READERS = {"voc": read_voc, "yolo": read_yolo}


def detect_format(root: str | Path) -> str | None:
    """``"voc"`` (an Annotations/ folder), ``"yolo"`` (images/ and labels/ folders) or None."""
    root = Path(root)
    if (root / "Annotations").is_dir():
        return "voc"
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return "yolo"
    return None


def read_dataset(root: str | Path, format: str | None = None, split: str | None = None,
                 class_names: list[str] | str | Path | None = None) -> tuple[dict, Path]:
    """A VOC or YOLO folder as ``(checked coco_dict, image_dir)``; ``format`` None: detected.

    ``class_names``: a list or a text file of names (one per line) fixing the label order.
    """
    root = Path(root)
    format = format or detect_format(root)
    if format is None:
        raise DataError(f"{root}: neither a VOC folder (Annotations/, JPEGImages/) nor a YOLO folder "
                        f"(images/, labels/)")
    if format not in _READERS:
        raise DataError(f"unknown data format {format!r}, expected one of {', '.join(FORMATS)}")
    if isinstance(class_names, (str, Path)):
        class_names = read_class_names(class_names)
    data, image_dir = _READERS[format](root, split=split, class_names=class_names)
    return check_coco_dict(data, root), image_dir


def convert_to_coco(root: str | Path, out_file: str | Path, format: str | None = None, split: str | None = None,
                    class_names: list[str] | str | Path | None = None) -> Path:
    """Write a VOC or YOLO folder (one split) as a COCO json; returns the image folder its
    ``file_name``s are relative to."""
    data, image_dir = read_dataset(root, format, split, class_names)
    write_json(out_file, data)
    return image_dir


def coco_split(root: str | Path, split: str, out_dir: str | Path) -> tuple[str, str] | None:
    """``(image_dir, ann_file)`` of a split of a VOC or YOLO folder, converted into ``out_dir/<split>.json``.

    VOC splits are ``ImageSets/Main/<split>.txt``, YOLO splits ``images/<split>/``. None when
    ``root`` is not such a folder or has no such split.
    """
    root = Path(root)
    format = detect_format(root)
    has_split = {"voc": (root / "ImageSets" / "Main" / f"{split}.txt").is_file(),
                 "yolo": (root / "images" / split).is_dir()}
    if format is None or not has_split[format]:
        return None
    ann_file = Path(out_dir) / f"{split}.json"
    image_dir = convert_to_coco(root, ann_file, format, split)
    return str(image_dir), str(ann_file)
