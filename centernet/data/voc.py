"""Pascal VOC XML folders, read into (and written from) the COCO dict that ``CocoDetection`` uses.

Layout (the VOC devkit's)::

    ROOT/Annotations/<stem>.xml          one file per image: <filename>, <size>, <object>s
    ROOT/JPEGImages/<filename>           the images
    ROOT/ImageSets/Main/<split>.txt      optional: the stems of a split (default: every xml)
    ROOT/labels.txt                      optional: class names, one per line, in label order

VOC boxes are 1-based inclusive pixel indices; COCO's are 0-based ``[x, y, w, h]``. As
PaddleDetection's ``x2coco.py`` does, ``x = xmin - 1`` and ``w = xmax - xmin + 1`` (same for y), so
an integer VOC box and its COCO box cover the same pixels. ``difficult`` objects are kept as
ordinary boxes (their flag is carried in the annotation as ``difficult``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ..io import read_text, write_bytes, write_text
from .errors import DataError

_BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")


def read_class_names(path: str | Path) -> list[str]:
    """Class names from a text file, one per line (blank lines ignored)."""
    names = [line.strip() for line in read_text(path, DataError).splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path}: no class names")
    if len(set(names)) != len(names):
        raise DataError(f"{path}: a class name appears more than once")
    return names


def read_voc(root: str | Path, split: str | None = None,
             class_names: list[str] | None = None) -> tuple[dict, Path]:
    """Read a VOC folder; returns ``(coco_dict, image_dir)`` with ``file_name`` relative to ``image_dir``.

    Classes: ``class_names`` if given, else ``ROOT/labels.txt`` if present, else the sorted names
    found; an object of another class raises ``DataError``. Category ids are ``1..C`` and image ids
    ``1..N`` in file order. Malformed XML, a missing size or box field raise ``DataError`` naming the file.
    """
    root = Path(root)
    ann_dir, image_dir = root / "Annotations", root / "JPEGImages"
    if not ann_dir.is_dir():
        raise DataError(f"{root}: not a VOC folder (no Annotations/ folder)")
    if split is not None:
        list_file = root / "ImageSets" / "Main" / f"{split}.txt"
        if not list_file.is_file():
            raise DataError(f"{list_file}: split list not found")
        stems = [line.split()[0] for line in read_text(list_file, DataError).splitlines() if line.strip()]
        xml_files = [ann_dir / f"{stem}.xml" for stem in stems]
    else:
        xml_files = sorted(ann_dir.glob("*.xml"))
    if not xml_files:
        raise DataError(f"{ann_dir}: no .xml annotation files")
    records = [_read_xml(path) for path in xml_files]

    if class_names is None and (root / "labels.txt").is_file():
        class_names = read_class_names(root / "labels.txt")
    if class_names is None:
        class_names = sorted({name for record in records for name, *_ in record["objects"]})
    category_of = {name: i + 1 for i, name in enumerate(class_names)}
    images, annotations = [], []
    for image_id, (path, record) in enumerate(zip(xml_files, records), start=1):
        images.append({"id": image_id, "file_name": record["file_name"],
                       "width": record["width"], "height": record["height"]})
        for number, (name, (xmin, ymin, xmax, ymax), difficult) in enumerate(record["objects"]):
            if name not in category_of:
                raise DataError(f"{path}: unknown class {name!r} (classes: {', '.join(class_names)})")
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category_of[name],
                                "bbox": [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1],
                                "iscrowd": 0, "difficult": difficult, "source": f"{path} (object {number})"})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}, image_dir


def _read_xml(path: Path) -> dict:
    """One annotation file -> {file_name, width, height, objects: [(name, (xmin, ymin, xmax, ymax), difficult)]}."""
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    try:
        tree = ET.parse(path)
    except ET.ParseError as error:
        raise DataError(f"{path}: malformed XML ({error})") from None
    node = tree.getroot()
    file_name = (node.findtext("filename") or "").strip() or f"{path.stem}.jpg"
    width, height = (_number(node, f"size/{tag}", path) for tag in ("width", "height"))
    if width <= 0 or height <= 0:
        raise DataError(f"{path}: image size must be positive, got {width}x{height}")
    objects = []
    for i, obj in enumerate(node.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DataError(f"{path}: object {i} has no <name>")
        box = tuple(_number(obj, f"bndbox/{tag}", path) for tag in _BOX_TAGS)
        if box[2] < box[0] or box[3] < box[1]:  # xmax == xmin is a box one pixel wide
            raise DataError(f"{path}: object {i} ({name}): its box is inverted: xmin {box[0]} xmax {box[2]}, "
                            f"ymin {box[1]} ymax {box[3]} (a maximum below its minimum)")
        difficult = int(_number(obj, "difficult", path)) if obj.find("difficult") is not None else 0
        objects.append((name, box, difficult))
    return {"file_name": file_name, "width": int(width), "height": int(height), "objects": objects}


def _number(node: ET.Element, tag: str, path: Path) -> float | int:
    text = node.findtext(tag)
    if text is None or not text.strip():
        raise DataError(f"{path}: missing <{tag}>")
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path}: <{tag}> is not a number: {text.strip()!r}") from None
    return int(value) if value.is_integer() else value


def write_voc(data: dict, root: str | Path) -> Path:
    """Write a COCO dict as ``ROOT/Annotations/*.xml`` and ``ROOT/labels.txt`` (images are not copied).

    Classes are written in category id order; crowd boxes are left out (VOC has no such notion).
    Returns ``ROOT/Annotations``.
    """
    ann_dir = Path(root) / "Annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    categories = sorted(data["categories"], key=lambda category: category["id"])
    name_of = {category["id"]: str(category["name"]) for category in categories}
    write_text(Path(root) / "labels.txt", "".join(f"{name}\n" for name in name_of.values()))
    stems = [Path(image["file_name"]).stem for image in data["images"]]
    if len(set(stems)) != len(stems):
        raise DataError(f"{root}: two images share a file name stem; VOC names annotation files by it")
    per_image: dict = {image["id"]: [] for image in data["images"]}
    for ann in data["annotations"]:
        if not ann.get("iscrowd", 0):
            per_image[ann["image_id"]].append(ann)
    for image, stem in zip(data["images"], stems):
        node = ET.Element("annotation")
        ET.SubElement(node, "filename").text = image["file_name"]
        size = ET.SubElement(node, "size")
        for tag, value in (("width", image["width"]), ("height", image["height"]), ("depth", 3)):
            ET.SubElement(size, tag).text = str(value)
        for ann in per_image[image["id"]]:
            x, y, w, h = ann["bbox"]
            obj = ET.SubElement(node, "object")
            ET.SubElement(obj, "name").text = name_of[ann["category_id"]]
            ET.SubElement(obj, "difficult").text = str(int(ann.get("difficult", 0)))
            box = ET.SubElement(obj, "bndbox")
            for tag, value in zip(_BOX_TAGS, (x + 1, y + 1, x + w, y + h)):
                ET.SubElement(box, tag).text = repr(value)
        ET.indent(node)
        write_bytes(ann_dir / f"{stem}.xml", ET.tostring(node, encoding="utf-8", xml_declaration=False))
    return ann_dir
