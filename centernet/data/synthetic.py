"""Synthetic detection scenes in COCO format: the built-in data set for the demo and the tests.

Each image is a cluttered, textured background (gradients, low-frequency colour noise, lines,
curves and translucent blobs that are not objects) with 0 to ``max_objects`` shapes of seven
classes drawn over it, later ones occluding earlier ones. Telling the classes apart needs shape
*and* texture: ``circle`` / ``ring`` share an outline (filled vs hollow), ``square`` /
``striped_square`` share a shape (flat vs striped); ``triangle``, ``star`` and ``cross`` complete
the set. Objects range from about 8 pixels to half the image, are rotated, stretched, shaded and
coloured at random; images are 240..640 pixels a side, blurred, noisy and JPEG-compressed.

Boxes are the extent of each object's *visible* pixels (COCO style); an object more than 70 %
hidden (by later objects or the image border) is left unannotated, like COCO's heavily occluded
objects. Everything is drawn from ``seed``: the same seed writes byte-identical files.

Two presets (:data:`PRESETS`): ``hard`` is the scene described above, the benchmark for learning
from scratch (tiny objects, occlusion, clutter). ``demo`` draws five clearly different shapes
(circle, square, triangle, star, cross: no look-alike pairs) fewer, larger and less hidden (1 to 6
objects of 32 pixels to 60 % of the short side, whole in the image, at most 40 % of any object
covered, a quieter background without blobs, 256..384-pixel images), so that a model trained for
ten minutes on two CPU cores finds most of them: what the demo shows a newcomer.

Layout written by ``generate_dataset(out_dir)``::

    out_dir/train/images/000001.jpg ...   out_dir/train/annotations.json
    out_dir/val/images/000001.jpg ...     out_dir/val/annotations.json
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("circle", "ring", "square", "striped_square", "triangle", "star", "cross")
SPLITS = ("train", "val")
_SUBPIXEL = 4  # cv2 drawing: coordinates carry 4 fractional bits


@dataclass(frozen=True)
class Preset:
    """What a scene may hold. Counts are drawn as ``integers(0, bound)``; sizes in pixels."""

    min_side: int = 240  # image sides, drawn uniformly in [min_side, max_side]
    max_side: int = 640
    mean_objects: float = 4.0  # objects per image: 1 + Poisson(mean_objects), at most max_objects
    max_objects: int = 12
    min_object: float = 8.0  # an object's diameter: log-uniform in [min_object, max_object * short side]
    max_object: float = 0.5
    min_visible: float = 0.3  # objects with less of their area in view are not annotated
    inside: bool = False  # centres drawn so that whole objects fit in the image (no border cuts)
    blobs: int = 7  # background clutter: translucent blobs, lines and curves (exclusive bounds)
    lines: int = 12
    curves: int = 5
    noise: float = 10.0  # sensor noise: standard deviation drawn in [0, noise]
    min_quality: int = 35  # JPEG quality drawn in [min_quality, 95]
    classes: tuple[str, ...] = CLASSES  # the shapes drawn (and the categories written), from CLASSES


PRESETS = {
    "hard": Preset(),
    "demo": Preset(min_side=256, max_side=384, mean_objects=2.0, max_objects=6, min_object=32.0,
                   max_object=0.6, min_visible=0.6, inside=True, blobs=1, lines=4, curves=2, noise=4.0,
                   min_quality=70, classes=("circle", "square", "triangle", "star", "cross")),
}


def generate_dataset(out_dir: str | Path, num_train: int = 1200, num_val: int = 200, seed: int = 0,
                     min_side: int | None = None, max_side: int | None = None, max_objects: int | None = None,
                     preset: str | Preset = "hard") -> dict[str, Path]:
    """Write the train and val splits (images + COCO json) under ``out_dir``.

    ``preset``: a name in :data:`PRESETS` or a :class:`Preset`; ``min_side``, ``max_side`` and
    ``max_objects`` override its values. Returns the paths as ``{"train_images", "train_ann",
    "val_images", "val_ann"}``. Each image depends only on ``(seed, split, index)``, so the first
    images of a split are the same whatever the split sizes.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown synthetic preset {preset!r}; known: {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    overrides = {"min_side": min_side, "max_side": max_side, "max_objects": max_objects}
    preset = replace(preset, **{key: value for key, value in overrides.items() if value is not None})
    unknown = set(preset.classes) - set(CLASSES)
    if not preset.classes or unknown or len(set(preset.classes)) != len(preset.classes):
        raise ValueError(f"classes must be distinct names from {CLASSES}, got {preset.classes}")
    if not 16 <= preset.min_side <= preset.max_side:
        raise ValueError(f"need 16 <= min_side <= max_side, got {preset.min_side} and {preset.max_side}")
    if num_train < 0 or num_val < 0:
        raise ValueError(f"image counts must be >= 0, got num_train={num_train} and num_val={num_val}")
    out_dir = Path(out_dir)
    paths = {}
    for split_index, (split, count) in enumerate(zip(SPLITS, (num_train, num_val))):
        image_dir = out_dir / split / "images"
        image_dir.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            rng = np.random.default_rng((seed, split_index, index))
            height, width = (int(side) for side in rng.integers(preset.min_side, preset.max_side + 1, size=2))
            image, objects = render_scene(rng, height, width, preset)
            quality = int(rng.integers(preset.min_quality, 96))
            file_name = f"{index + 1:06d}.jpg"
            ok, encoded = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise RuntimeError(f"JPEG encoding failed for {image_dir / file_name}")
            (image_dir / file_name).write_bytes(encoded.tobytes())
            images.append({"id": index + 1, "file_name": file_name, "width": width, "height": height})
            for label, bbox, area in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": label + 1,
                                    "bbox": bbox, "area": area, "iscrowd": 0})
        ann_file = out_dir / split / "annotations.json"
        categories = [{"id": i + 1, "name": name, "supercategory": "shape"}
                      for i, name in enumerate(preset.classes)]
        coco = {"info": {"description": "centernet synthetic shapes", "seed": seed, "split": split,
                         "preset": preset.__dict__},
                "images": images, "annotations": annotations, "categories": categories}
        ann_file.write_text(json.dumps(coco))
        paths[f"{split}_images"], paths[f"{split}_ann"] = image_dir, ann_file
    return paths


def render_scene(rng: np.random.Generator, height: int, width: int,
                 preset: Preset = PRESETS["hard"]) -> tuple[np.ndarray, list[tuple[int, list[int], int]]]:
    """One RGB uint8 scene and its objects as ``(label, [x, y, w, h] visible box, visible area)``."""
    image = _background(rng, height, width, preset)
    owner = np.full((height, width), -1, np.int32)  # which object each pixel shows
    count = 0 if rng.random() < 0.03 else min(preset.max_objects, 1 + int(rng.poisson(preset.mean_objects)))
    placed = []  # (label, window origin x, y, full mask [s, s] bool)
    min_size = min(preset.min_object, 0.5 * min(height, width))
    max_size = max(min_size + 1, preset.max_object * min(height, width))
    for k in range(count):
        label = int(rng.integers(len(preset.classes)))
        size = math.exp(rng.uniform(math.log(min_size), math.log(max_size)))
        margin = 0.5 * size if preset.inside else 0.0
        center = (rng.uniform(margin, width - margin), rng.uniform(margin, height - margin))
        x0, y0, mask = _draw_object(rng, image, owner, k, preset.classes[label], size, center)
        placed.append((label, x0, y0, mask))

    objects = []
    for k, (label, x0, y0, mask) in enumerate(placed):
        side = mask.shape[0]
        visible = _crop(owner, x0, y0, side) == k  # [s', s'] inside the image only
        area = int(visible.sum())
        if area == 0 or area < preset.min_visible * mask.sum():
            continue
        ys, xs = np.nonzero(visible)
        left, top = max(x0, 0), max(y0, 0)
        box = [int(left + xs.min()), int(top + ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        objects.append((label, box, area))
    return _camera(rng, image, preset.noise), objects


# ----------------------------------------------------------------------------- background

def _random_color(rng: np.random.Generator, min_value: float = 0.15) -> np.ndarray:
    """An RGB colour (float, 0..255) from a random hue, saturation and value."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(0, 255), rng.uniform(min_value * 255, 255)]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int, channels: int = 3) -> np.ndarray:
    """Noise in [-1, 1] that varies over about ``cells`` cells per side ([h, w, channels] float32)."""
    grid = rng.uniform(-1, 1, size=(cells + 2, cells + 2, channels)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC).reshape(height, width, channels)


def _background(rng: np.random.Generator, height: int, width: int, preset: Preset) -> np.ndarray:
    """A cluttered RGB uint8 background: gradient + colour noise + lines, curves and blobs."""
    # The smooth part is built at a quarter of the size and scaled up (it has no fine detail).
    small_h, small_w = max(height // 4, 2), max(width // 4, 2)
    start, end = _random_color(rng), _random_color(rng)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.arange(small_w, dtype=np.float32)[None, :] * math.cos(angle)
            + np.arange(small_h, dtype=np.float32)[:, None] * math.sin(angle))  # [h/4, w/4]
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    smooth = start + ramp[:, :, None] * (end - start)  # [h/4, w/4, 3]
    smooth += _smooth_noise(rng, small_h, small_w, int(rng.integers(2, 8))) * rng.uniform(10, 50)
    smooth += _smooth_noise(rng, small_h, small_w, int(rng.integers(20, 60)), 1) * rng.uniform(0, 25)
    smooth = cv2.resize(smooth, (width, height), interpolation=cv2.INTER_LINEAR)  # [h, w, 3]
    image = np.clip(smooth, 0, 255).astype(np.uint8)

    for _ in range(int(rng.integers(0, preset.blobs))):  # translucent irregular blobs
        overlay = image.copy()
        radius = rng.uniform(8, 0.35 * min(height, width))
        center = rng.uniform((0, 0), (width, height))
        angles = np.sort(rng.uniform(0, 2 * math.pi, int(rng.integers(6, 14))))
        radii = radius * rng.uniform(0.4, 1.0, len(angles))
        points = center + np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=1)
        cv2.fillPoly(overlay, [_fixed(points)], _random_color(rng).tolist(), cv2.LINE_AA, _SUBPIXEL)
        alpha = rng.uniform(0.2, 0.6)
        image = cv2.addWeighted(overlay, alpha, image, 1 - alpha, 0)
    for _ in range(int(rng.integers(0, preset.lines))):  # straight lines
        ends = rng.uniform((-50, -50), (width + 50, height + 50), size=(2, 2))
        cv2.line(image, *[tuple(p) for p in _fixed(ends)], _random_color(rng).tolist(),
                 int(rng.integers(1, 4)), cv2.LINE_AA, _SUBPIXEL)
    for _ in range(int(rng.integers(0, preset.curves))):  # wandering curves
        steps = rng.normal(0, rng.uniform(4, 15), size=(int(rng.integers(8, 40)), 2)).cumsum(axis=0)
        points = rng.uniform((0, 0), (width, height)) + steps
        cv2.polylines(image, [_fixed(points)], False, _random_color(rng).tolist(),
                      int(rng.integers(1, 4)), cv2.LINE_AA, _SUBPIXEL)
    return image


# ----------------------------------------------------------------------------- objects

def _fixed(points: np.ndarray) -> np.ndarray:
    """Float points -> cv2's fixed-point int32 coordinates with ``_SUBPIXEL`` fractional bits."""
    return np.round(np.asarray(points) * (1 << _SUBPIXEL)).astype(np.int32)


def _shape_polygons(rng: np.random.Generator, name: str, radius: float) -> tuple[np.ndarray, np.ndarray | None]:
    """Outline of a class's shape around (0, 0) within ``radius``: (outer polygon, hole or None)."""
    aspect = rng.uniform(0.7, 1.0)
    if name in ("circle", "ring"):
        t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        outer = np.stack([np.cos(t) * radius, np.sin(t) * radius * aspect], axis=1)
        return outer, outer * rng.uniform(0.45, 0.7) if name == "ring" else None
    if name in ("square", "striped_square"):
        half = 0.7 * radius
        return np.array([[-half, -half * aspect], [half, -half * aspect], [half, half * aspect],
                         [-half, half * aspect]]), None
    if name == "triangle":
        t = math.pi / 2 + np.arange(3) * 2 * math.pi / 3 + rng.uniform(-0.2, 0.2, 3)
        return np.stack([np.cos(t) * radius, np.sin(t) * radius], axis=1), None
    if name == "star":
        t = np.arange(10) * math.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, radius, radius * rng.uniform(0.38, 0.5))
        return np.stack([np.cos(t) * radii, np.sin(t) * radii], axis=1), None
    arm, half = 0.95 * radius, radius * rng.uniform(0.2, 0.3)  # cross: a plus sign
    return np.array([[-half, -arm], [half, -arm], [half, -half], [arm, -half], [arm, half], [half, half],
                     [half, arm], [-half, arm], [-half, half], [-arm, half], [-arm, -half], [-half, -half]]), None


def _fill(rng: np.random.Generator, name: str, side: int, base: np.ndarray) -> np.ndarray:
    """The object's paint over its [side, side] window: shaded flat colour, or stripes."""
    angle = rng.uniform(0, 2 * math.pi)
    steps = np.arange(side, dtype=np.float32) / side
    along = steps[None, :] * math.cos(angle) + steps[:, None] * math.sin(angle)  # [s, s] along a direction
    paint = base + (along[:, :, None] - 0.5) * rng.uniform(-60, 60)  # [s, s, 3] lit from one side
    if name == "striped_square":
        other = 255.0 - base if rng.random() < 0.5 else _random_color(rng)
        periods = rng.uniform(2.5, 6)
        stripes = (np.floor(along * periods * 2) % 2)[:, :, None]  # [s, s, 1] in {0, 1}
        paint = paint * (1 - stripes) + other * stripes
    return paint


def _crop(array: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """The part of ``array`` under a window at (x0, y0) of ``side`` pixels (clipped to the array)."""
    return array[max(y0, 0):max(y0 + side, 0), max(x0, 0):max(x0 + side, 0)]


def _draw_object(rng: np.random.Generator, image: np.ndarray, owner: np.ndarray, k: int, name: str,
                 size: float, center: tuple[float, float]) -> tuple[int, int, np.ndarray]:
    """Paint object ``k`` over ``image`` (anti-aliased) and claim its pixels in ``owner``.

    Returns the window's top-left corner in the image and the object's full mask (including any
    part outside the image), so that the caller can measure how much of it stays visible.
    """
    radius = size / 2
    outer, hole = _shape_polygons(rng, name, radius)
    angle = rng.uniform(0, 2 * math.pi)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    side = 2 * math.ceil(radius) + 3
    x0, y0 = int(math.floor(center[0])) - side // 2, int(math.floor(center[1])) - side // 2
    local = np.array(center) - (x0, y0)  # the centre inside the window

    alpha = np.zeros((side, side), np.uint8)
    cv2.fillPoly(alpha, [_fixed(outer @ rotation.T + local)], 255, cv2.LINE_AA, _SUBPIXEL)
    if hole is not None:
        cv2.fillPoly(alpha, [_fixed(hole @ rotation.T + local)], 0, cv2.LINE_AA, _SUBPIXEL)
    mask = alpha >= 128

    target = _crop(image, x0, y0, side)  # view into the image
    if target.size == 0:
        return x0, y0, mask
    sub_y, sub_x = slice(max(-y0, 0), max(-y0, 0) + target.shape[0]), slice(max(-x0, 0), max(-x0, 0) + target.shape[1])
    behind = target[mask[sub_y, sub_x]].astype(np.float32)
    base = _random_color(rng, min_value=0.25)
    for _ in range(3):  # prefer a colour that stands out from what is behind
        if len(behind) == 0 or np.abs(base - behind.mean(axis=0)).sum() > 90:
            break
        base = _random_color(rng, min_value=0.25)
    paint = _fill(rng, name, side, base)[sub_y, sub_x]
    weight = alpha[sub_y, sub_x, None].astype(np.float32) / 255.0
    target[:] = np.clip(target * (1 - weight) + paint * weight, 0, 255).astype(np.uint8)
    _crop(owner, x0, y0, side)[mask[sub_y, sub_x]] = k
    return x0, y0, mask


# ----------------------------------------------------------------------------- camera

def _camera(rng: np.random.Generator, image: np.ndarray, noise: float) -> np.ndarray:
    """Colour cast, optional blur and sensor noise, as a camera would add them."""
    image = image.astype(np.float32)
    image *= rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.5))
    # Uniform noise of standard deviation sigma (random bytes are far cheaper than normal draws).
    sigma = rng.uniform(0, noise)
    noise = np.frombuffer(rng.bytes(image.size), np.uint8).reshape(image.shape).astype(np.float32)
    noise -= np.float32(127.5)
    noise *= np.float32(sigma * math.sqrt(12) / 256)
    image += noise
    return np.clip(image, 0, 255, out=image).astype(np.uint8)
