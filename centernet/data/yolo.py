"""YOLO txt folders (Ultralytics' layout), read into (and written from) the COCO dict of ``CocoDetection``.

Layout::

    ROOT/images[/<split>]/<name>.jpg     the images (subfolders are searched)
    ROOT/labels[/<split>]/<name>.txt     one line per box: ``class cx cy w h``, normalised to [0, 1]
    ROOT/classes.txt                     class names, one per line (or ``names`` in ROOT/data.yaml)

An image without a label file, or with an empty one, has no boxes (a negative example). Image sizes
are read from the file headers (EXIF orientation applied, as ``load_image`` does), since YOLO
coordinates are fractions of them.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from PIL import Image, UnidentifiedImageError

from ..io import read_text, write_text
from .errors import DataError, ImageLoadError
from .images import IMAGE_SUFFIXES
from .voc import read_class_names

_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def yolo_class_names(root: str | Path) -> list[str]:
    """``ROOT/classes.txt``, else ``names`` of ``ROOT/data.yaml`` (a list or an {index: name} map)."""
    root = Path(root)
    if (root / "classes.txt").is_file():
        return read_class_names(root / "classes.txt")
    for yaml_file in (root / "data.yaml", root / "dataset.yaml"):
        if yaml_file.is_file():
            try:
                names = (yaml.safe_load(read_text(yaml_file, DataError)) or {}).get("names")
            except (yaml.YAMLError, AttributeError) as error:
                raise DataError(f"{yaml_file}: not a YAML mapping with 'names' ({error})") from None
            if isinstance(names, dict):
                names = [names[key] for key in sorted(names)]
            if not isinstance(names, list) or not names:
                raise DataError(f"{yaml_file}: 'names' must be a non-empty list of class names")
            return [str(name) for name in names]
    raise DataError(f"{root}: no class names (write classes.txt, one name per line, or give class_names)")


def read_yolo(root: str | Path, split: str | None = None,
              class_names: list[str] | None = None) -> tuple[dict, Path]:
    """Read a YOLO folder; returns ``(coco_dict, image_dir)`` with ``file_name`` relative to ``image_dir``.

    A label line with other than 5 fields, a coordinate outside [0, 1] or a class index without a
    name raises ``DataError`` naming the file and line. Boxes become COCO ``[x, y, w, h]`` pixels.
    """
    root = Path(root)
    image_dir = root / "images" / split if split else root / "images"
    label_dir = root / "labels" / split if split else root / "labels"
    if not image_dir.is_dir():
        raise DataError(f"{root}: not a YOLO folder (no {image_dir.relative_to(root)}/ folder)")
    class_names = list(class_names) if class_names is not None else yolo_class_names(root)
    image_files = sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not image_files:
        raise DataError(f"{image_dir}: no images")
    images, annotations = [], []
    for image_id, image_file in enumerate(image_files, start=1):
        relative = image_file.relative_to(image_dir)
        width, height = image_size(image_file)
        images.append({"id": image_id, "file_name": relative.as_posix(), "width": width, "height": height})
        label_file = (label_dir / relative).with_suffix(".txt")
        for where, label, (cx, cy, w, h) in _read_label_file(label_file, len(class_names)):
            # clipped: a box at the border may reach past it by the label's rounding
            x0, x1 = max(cx - w / 2, 0.0) * width, min(cx + w / 2, 1.0) * width
            y0, y1 = max(cy - h / 2, 0.0) * height, min(cy + h / 2, 1.0) * height
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0, "source": where})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}, image_dir


def _read_label_file(path: Path, num_classes: int) -> list[tuple[str, int, tuple[float, ...]]]:
    """(``file:line``, class index, (cx, cy, w, h)) of each box of a label file."""
    if not path.is_file():
        return []
    boxes = []
    for line_number, line in enumerate(read_text(path, DataError).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{line_number}"
        if len(fields) != 5:
            raise DataError(f"{where}: expected 5 fields 'class cx cy w h', got {len(fields)}")
        try:
            label, values = int(fields[0]), tuple(float(field) for field in fields[1:])
        except ValueError:
            raise DataError(f"{where}: not numbers: {line.strip()!r}") from None
        if not 0 <= label < num_classes:
            raise DataError(f"{where}: unknown class index {label} ({num_classes} class names)")
        if not all(0.0 <= value <= 1.0 for value in values):
            raise DataError(f"{where}: coordinates must be normalised to [0, 1], got {' '.join(fields[1:])}")
        if values[2] <= 0 or values[3] <= 0:
            raise DataError(f"{where}: the box has zero width or height: {' '.join(fields[1:])}")
        boxes.append((where, label, values))
    return boxes


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image as ``load_image`` returns it, from the header only."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(0x0112) in _TRANSPOSED_ORIENTATIONS:
                width, height = height, width
    except (UnidentifiedImageError, OSError) as error:
        raise ImageLoadError(f"{path}: not a readable image ({error})") from None
    return width, height


def write_yolo(data: dict, root: str | Path) -> Path:
    """Write a COCO dict's boxes as ``ROOT/labels/<file_name>.txt`` and ``ROOT/classes.txt``.

    Boxes are clipped to their image first (YOLO coordinates cannot leave it); crowd boxes are left
    out. Images are not copied (put them under ``ROOT/images``). Returns ``ROOT/labels``.
    """
    label_dir = Path(root) / "labels"
    categories = sorted(data["categories"], key=lambda category: category["id"])
    label_of = {category["id"]: label for label, category in enumerate(categories)}
    Path(root).mkdir(parents=True, exist_ok=True)
    write_text(Path(root) / "classes.txt", "".join(f"{c['name']}\n" for c in categories))
    lines: dict = {image["id"]: [] for image in data["images"]}
    size_of = {image["id"]: (image["width"], image["height"]) for image in data["images"]}
    for ann in data["annotations"]:
        width, height = size_of[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        x0, y0 = min(max(x, 0), width), min(max(y, 0), height)
        x1, y1 = min(max(x + w, 0), width), min(max(y + h, 0), height)
        if ann.get("iscrowd", 0) or x1 <= x0 or y1 <= y0:
            continue
        lines[ann["image_id"]].append(f"{label_of[ann['category_id']]} {(x0 + x1) / 2 / width:.6f} "
                                      f"{(y0 + y1) / 2 / height:.6f} {(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}\n")
    for image in data["images"]:
        write_text((label_dir / image["file_name"]).with_suffix(".txt"), "".join(lines[image["id"]]))
    return label_dir
