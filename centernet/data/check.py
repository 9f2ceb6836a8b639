"""Check a COCO-format split before training: every problem, each with its file and id.

``check_split(image_dir, ann_file)`` reads the annotation file without stopping at the first
problem and decodes every image (with :func:`load_image`, as training does). Each finding is an
:class:`Issue` of one of three levels:

``error``    the entry cannot be used as it is: a missing, unreadable or truncated image, an image
             whose size on disk differs from the json's, a box with zero or negative size, NaN or
             outside its image, an unknown image or category id, a duplicate id, a malformed entry.
             Training stops on errors, or with ``skip_bad`` leaves the bad entries out
             (:meth:`CheckReport.clean`). A few errors are ``fatal``: the file cannot be read at
             all, or its categories are unusable; nothing can be skipped then.
``warning``  usable, but probably not what was meant: a box reaching outside its image (training
             clips it), a category without any box.
``info``     worth knowing: an image without any annotation (a negative example).

The report also counts the boxes per class and histograms their sizes.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..io import read_text
from .coco import REQUIRED_KEYS, is_bbox, duplicate_names, is_id
from .errors import DataError
from .images import load_image

LEVELS = ("error", "warning", "info")
SIZE_BINS = (0, 8, 16, 32, 64, 128, 256, 512)  # lower edges of the sqrt(box area) histogram, pixels


@dataclass(frozen=True)
class Issue:
    """One finding: ``level`` (error / warning / info), the ``file`` it is in, the ids involved."""

    level: str
    file: str
    message: str
    image_id: Any = None
    ann_id: Any = None
    fatal: bool = False

    def __str__(self) -> str:
        where = []
        if self.ann_id is not None:
            where.append(f"annotation {self.ann_id}")
        if self.image_id is not None:
            where.append(f"image {self.image_id}")
        prefix = f" ({', '.join(where)})" if where else ""
        return f"{self.level:<7} {self.file}{prefix}: {self.message}"


@dataclass
class CheckReport:
    """The findings on one split and its statistics; ``ok`` when there is no error."""

    ann_file: str
    image_dir: str
    issues: list[Issue] = field(default_factory=list)
    num_images: int = 0
    num_boxes: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)  # usable boxes per category name
    size_histogram: dict[str, int] = field(default_factory=dict)  # "8-16": boxes with sqrt(area) there
    bad_images: set = field(default_factory=set)  # image ids to leave out when skipping
    bad_annotations: set = field(default_factory=set)  # annotation ids to leave out when skipping
    data: dict | None = None  # the parsed file (None when it could not be read)

    def of_level(self, level: str) -> list[Issue]:
        return [issue for issue in self.issues if issue.level == level]

    @property
    def errors(self) -> list[Issue]:
        return self.of_level("error")

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def fatal(self) -> bool:
        return any(issue.fatal for issue in self.issues)

    def counts(self) -> str:
        return ", ".join(f"{len(self.of_level(level))} {level}{'s' if len(self.of_level(level)) != 1 else ''}"
                         for level in LEVELS)

    def summary(self) -> str:
        """Statistics lines: sizes, boxes per class, box-size histogram, issue counts."""
        lines = [f"{self.ann_file}: {self.num_images} images, {self.num_boxes} usable boxes, "
                 f"{len(self.class_counts)} categories"]
        if self.class_counts:
            lines.append("  boxes per class: " + ", ".join(f"{name} {count}" for name, count in self.class_counts.items()))
        filled = [i for i, count in enumerate(self.size_histogram.values()) if count]
        if filled:  # the bins from the smallest to the largest box
            spans = list(self.size_histogram.items())[filled[0]:filled[-1] + 1]
            lines.append("  box size sqrt(w*h) px: " + ", ".join(f"{span}: {count}" for span, count in spans))
        lines.append(f"  {self.counts()}")
        return "\n".join(lines)

    def clean(self) -> dict:
        """The annotation dict without the bad images (and their boxes) and the bad annotations.

        Raises ``DataError`` listing the fatal problems when the file cannot be used at all.
        """
        if self.fatal or self.data is None:
            raise DataError(error_listing([issue for issue in self.issues if issue.fatal], self.ann_file))
        images = [image for image in self.data["images"]
                  if _complete(image, "images") and image["id"] not in self.bad_images]
        if not images:
            raise DataError(f"{self.ann_file}: no usable image is left after leaving out the bad ones")
        kept = {image["id"] for image in images}
        annotations = [ann for ann in self.data["annotations"] if _complete(ann, "annotations")
                       and ann["id"] not in self.bad_annotations and ann["image_id"] in kept]
        return {**self.data, "images": images, "annotations": annotations}


def error_listing(errors: list[Issue], ann_file: str) -> str:
    """One line for an exception: how many ``errors``, the first in full, where to see them all."""
    first = str(errors[0]).removeprefix(f"{errors[0].level:<7} ") if errors else "unreadable"
    more = f"; `centernet check-data {ann_file}` lists all {len(errors)}" if len(errors) > 1 else ""
    return f"{ann_file}: {len(errors)} data error(s), the first: {first}{more}"


def _complete(entry: Any, section: str) -> bool:
    """An object with the keys COCO requires in ``section`` and a hashable id."""
    return (isinstance(entry, dict) and all(key in entry for key in REQUIRED_KEYS[section])
            and is_id(entry["id"]))


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


class _Collector:
    """Adds issues to a report (the annotation file is the default ``file``)."""

    def __init__(self, report: CheckReport):
        self.report = report

    def add(self, level: str, message: str, file: str | None = None, image_id=None, ann_id=None,
            fatal: bool = False) -> None:
        self.report.issues.append(Issue(level, file or self.report.ann_file, message, image_id, ann_id, fatal))


def check_split(image_dir: str | Path, ann_file: str | Path, workers: int = 0,
                check_images: bool = True) -> CheckReport:
    """Check one COCO split: the annotation file and (``check_images``) every image it lists.

    ``workers`` > 1 decodes images in that many threads. Never raises for bad data: everything
    found is in the returned :class:`CheckReport`.
    """
    image_dir, ann_file = Path(image_dir), Path(ann_file)
    report = CheckReport(str(ann_file), str(image_dir))
    out = _Collector(report)
    data = _read_json(ann_file, out)
    if data is None:
        return report
    report.data = data
    categories = _check_categories(data, out)
    if categories is None:
        return report
    images = _check_image_entries(data, out)
    if check_images:
        _check_image_files(image_dir, images, out, workers)
    _check_annotations(data, images, categories, out)
    return report


def _read_json(ann_file: Path, out: _Collector) -> dict | None:
    if not ann_file.is_file():
        out.add("error", "is a folder, not an annotation file" if ann_file.is_dir() else "annotation file not found",
                fatal=True)
        return None
    try:
        text = read_text(ann_file, DataError)
    except DataError as error:
        out.add("error", str(error).removeprefix(f"{ann_file}: "), fatal=True)
        return None
    except OSError as error:
        out.add("error", f"cannot read the annotation file ({error.strerror or error})", fatal=True)
        return None
    if not text.strip():
        out.add("error", "annotation file is empty", fatal=True)
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        out.add("error", f"invalid JSON: {error.msg} at line {error.lineno} column {error.colno}", fatal=True)
        return None
    if not isinstance(data, dict):
        out.add("error", "expected a JSON object with images, annotations and categories", fatal=True)
        return None
    missing = [section for section in REQUIRED_KEYS if not isinstance(data.get(section), list)]
    for section in missing:
        out.add("error", f"missing list '{section}'", fatal=True)
    return None if missing else data


def _well_formed(data: dict, section: str, out: _Collector, id_field: str | None, bad: set | None) -> list[dict]:
    """The entries of ``section`` that are objects with the required keys and a unique id.

    The others are reported; their ids go to ``bad`` (``bad=None``: every problem is fatal).
    """
    fatal = bad is None
    bad = set() if bad is None else bad
    good = []
    for position, entry in enumerate(data[section]):
        entry_id = entry.get("id") if isinstance(entry, dict) else None
        ids = {id_field: entry_id} if id_field and _hashable(entry_id) else {}
        if not isinstance(entry, dict):
            out.add("error", f"{section}[{position}] is not an object", fatal=fatal)
            continue
        lacking = [key for key in REQUIRED_KEYS[section] if key not in entry]
        if lacking or not is_id(entry_id):
            problem = f"lacks {', '.join(map(repr, lacking))}" if lacking else f"has an id that is not an integer: {entry_id!r}"
            out.add("error", f"{section}[{position}] {problem}", fatal=fatal, **ids)
            if ids:
                bad.add(entry_id)
            continue
        good.append(entry)
    repeats = Counter(entry["id"] for entry in good)
    duplicates = {key for key, count in repeats.items() if count > 1}
    for key in sorted(duplicates, key=str):
        out.add("error", f"{section} id {key!r} appears {repeats[key]} times", fatal=fatal,
                **({id_field: key} if id_field else {}))
    bad.update(duplicates)
    return [entry for entry in good if entry["id"] not in bad]


def _check_categories(data: dict, out: _Collector) -> dict[Any, str] | None:
    """category id -> name (sorted by id), or None when the categories are unusable (fatal)."""
    before = len(out.report.issues)
    well_formed = _well_formed(data, "categories", out, None, None)
    categories = {category["id"]: str(category["name"]) for category in well_formed}
    if not data["categories"]:
        out.add("error", "no categories", fatal=True)
    for problem in duplicate_names({"images": [], "categories": well_formed}):
        out.add("error", problem, fatal=True)
    if len(out.report.issues) > before:
        return None
    return dict(sorted(categories.items(), key=lambda item: str(item[0])))


def _check_image_entries(data: dict, out: _Collector) -> dict[Any, dict]:
    """image id -> entry, for the well-formed images with a positive size and a file name."""
    bad = out.report.bad_images
    images = {}
    for image in _well_formed(data, "images", out, "image_id", bad):
        if not all(type(image[key]) is int and image[key] > 0 for key in ("width", "height")):
            out.add("error", f"width and height must be positive integers, got {image['width']!r} x "
                             f"{image['height']!r}", image_id=image["id"])
            bad.add(image["id"])
        elif not isinstance(image["file_name"], str) or not image["file_name"]:
            out.add("error", f"file_name must be a non-empty string, got {image['file_name']!r}",
                    image_id=image["id"])
            bad.add(image["id"])
        else:
            images[image["id"]] = image
    first_id: dict[str, Any] = {}
    for image_id, image in list(images.items()):  # one file under two ids: the later ones are bad
        first = first_id.setdefault(image["file_name"], image_id)
        if first != image_id:
            out.add("error", f"{image['file_name']} is already listed as image {first!r}", image_id=image_id)
            bad.add(image_id)
            del images[image_id]
    if not data["images"]:
        out.add("error", "no images", fatal=True)
    out.report.num_images = len(images)
    return images


def _probe_image(path: Path) -> tuple[tuple[int, int] | None, tuple[int, int] | None, str | None]:
    """(decoded (w, h) with EXIF applied, stored (w, h), error) of one image file."""
    try:
        height, width = load_image(path).shape[:2]
    except DataError as error:
        return None, None, str(error).removeprefix(f"{path}: ")
    from PIL import Image

    with Image.open(path) as image:
        stored = image.size
    return (width, height), stored, None


def _check_image_files(image_dir: Path, images: dict, out: _Collector, workers: int) -> None:
    """Decode every image as training does; compare its size with the json's."""
    paths = {image_id: image_dir / image["file_name"] for image_id, image in images.items()}
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            results = dict(zip(paths, pool.map(_probe_image, paths.values())))
    else:
        results = {image_id: _probe_image(path) for image_id, path in paths.items()}
    for image_id, (size, stored, error) in results.items():
        expected = (images[image_id]["width"], images[image_id]["height"])
        if error:
            out.add("error", error, file=str(paths[image_id]), image_id=image_id)
        elif size != expected:
            hint = (" (its EXIF orientation rotates it; the json has the size before rotation)"
                    if stored == expected else "")
            out.add("error", f"image is {size[0]}x{size[1]} on disk but the json says "
                             f"{expected[0]}x{expected[1]}{hint}", file=str(paths[image_id]), image_id=image_id)
        else:
            continue
        out.report.bad_images.add(image_id)


def _box_problem(ann: dict, image: dict) -> tuple[str, str] | None:
    """(level, message) for a box that is unusable or reaches outside its image, else None."""
    x, y, w, h = (float(v) for v in ann["bbox"])
    width, height = image["width"], image["height"]
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return "error", f"bbox has NaN or infinite values: {ann['bbox']}"
    if w <= 0 or h <= 0:
        return "error", f"bbox has zero or negative size: w={w:g} h={h:g}"
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return "error", f"bbox {ann['bbox']} lies outside the {width}x{height} image"
    if x < 0 or y < 0 or x + w > width or y + h > height:
        return "warning", f"bbox {ann['bbox']} reaches outside the {width}x{height} image (training clips it)"
    return None


def _check_annotations(data: dict, images: dict, categories: dict, out: _Collector) -> None:
    report = out.report
    bad = report.bad_annotations
    counts, sizes, annotated = Counter(), [], set()
    for ann in _well_formed(data, "annotations", out, "ann_id", bad):
        ann_id, image_id, cat_id = ann["id"], ann["image_id"], ann["category_id"]
        known_image = is_id(image_id) and (image_id in images or image_id in report.bad_images)
        problem = None
        if not known_image:
            problem = "error", f"refers to unknown image id {image_id!r}"
        elif not is_id(cat_id) or cat_id not in categories:
            problem = "error", f"has unknown category id {cat_id!r}"
        elif not is_bbox(ann["bbox"]):
            problem = "error", f"bbox must be 4 numbers [x, y, w, h], got {ann['bbox']!r}"
        elif image_id in report.bad_images:
            continue  # its image is reported (and left out when skipping)
        elif not ann.get("iscrowd", 0):  # crowd regions are no training boxes; COCOeval ignores them
            problem = _box_problem(ann, images[image_id])
        if problem:  # against the label file a VOC / YOLO box came from, when it did
            source = ann.get("source") if isinstance(ann.get("source"), str) else None
            out.add(*problem, file=source, image_id=image_id if known_image else None, ann_id=ann_id)
            if problem[0] == "error":
                bad.add(ann_id)
                continue
        annotated.add(image_id)
        if not ann.get("iscrowd", 0):
            counts[cat_id] += 1
            sizes.append(math.sqrt(float(ann["bbox"][2]) * float(ann["bbox"][3])))

    for cat_id, name in categories.items():
        if not counts[cat_id]:
            out.add("warning", f"category {cat_id!r} ({name!r}) has no usable box")
    for image_id, image in images.items():
        if image_id not in annotated and image_id not in report.bad_images:
            out.add("info", f"{image['file_name']} has no annotations (a negative example)", image_id=image_id)
    report.num_boxes = len(sizes)
    report.class_counts = {name: counts[cat_id] for cat_id, name in categories.items()}
    report.size_histogram = _histogram(sizes)


def _histogram(sizes: Iterable[float]) -> dict[str, int]:
    spans = [f"{low}-{high}" for low, high in zip(SIZE_BINS, SIZE_BINS[1:])] + [f"{SIZE_BINS[-1]}+"]
    counts = Counter()
    for size in sizes:
        counts[sum(size >= low for low in SIZE_BINS[1:])] += 1
    return {span: counts[i] for i, span in enumerate(spans)}



def checked_annotations(image_dir: str | Path, ann_file: str | Path, skip_bad: bool = False,
                        workers: int = 0) -> dict:
    """The annotation dict training uses, after :func:`check_split`.

    Errors raise ``DataError`` listing them; with ``skip_bad`` the bad images and boxes are left
    out instead, with one warning that counts them. Warnings and infos pass silently (the data
    loader warns about the boxes it clips).
    """
    report = check_split(image_dir, ann_file, workers=workers)
    if report.ok:
        return report.data
    if not skip_bad or report.fatal:
        raise DataError(error_listing(report.errors, report.ann_file)
                        + ("" if report.fatal else " (--skip-bad-data leaves the bad entries out)"))
    data = report.clean()
    warnings.warn(f"{report.ann_file}: left out {len(report.data['images']) - len(data['images'])} images and "
                  f"{len(report.data['annotations']) - len(data['annotations'])} annotations with "
                  f"{len(report.errors)} data errors (`centernet check-data` lists them)", stacklevel=2)
    return data


def find_splits(data: str | Path, images: str | Path | None = None) -> list[tuple[Path, Path]]:
    """(image folder, annotation file) pairs of ``data``: an annotation ``.json`` (its images in
    ``images`` or in ``images/`` beside it), a split folder (``images/`` + ``annotations.json``), or a
    data set folder holding split folders (``train/``, ``val/``, ...)."""
    data = Path(data)
    if data.is_file():
        return [(Path(images) if images else data.parent / "images", data)]
    if (data / "annotations.json").is_file():
        return [(Path(images) if images else data / "images", data / "annotations.json")]
    splits = sorted(path for path in data.glob("*/annotations.json")) if data.is_dir() else []
    if not splits:
        raise FileNotFoundError(f"{data}: expected an annotation .json file, a folder with annotations.json "
                                "and images/, or a folder of such split folders (train/, val/)")
    return [(path.parent / "images", path) for path in splits]
