"""PaddleDetection's CenterNet image pipeline: affine warp, flip, colour jitter, lighting, normalise.

Training (Paddle's reader): Decode -> FlipWarpAffine -> CenterRandColor -> Lighting ->
NormalizeImage -> Permute. Evaluation: Decode -> WarpAffine(keep_res) -> NormalizeImage -> Permute.

Channel order: Paddle's Decode gives RGB, but its (Flip)WarpAffine converts the image to BGR before
warping, so the network sees **BGR** channels, and ``MEAN`` / ``STD`` (CornerNet's values) are in
B, G, R order. Our transforms take RGB uint8 (``load_image``) and return BGR, normalised
``(x / 255 - MEAN) / STD`` as float32 ``[3, H, W]``; ``denormalize`` undoes it for drawing.

Geometry: one affine per image maps original pixels to input pixels (cv2's convention: integer
coordinates are pixel centres, as in Paddle); boxes go through the same affine (their two corners),
then are clipped to the input image. ``inverse_affine`` maps input pixels back to the original image.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

MEAN = np.array([0.40789655, 0.44719303, 0.47026116], dtype=np.float32)  # B, G, R
STD = np.array([0.2886383, 0.27408165, 0.27809834], dtype=np.float32)  # B, G, R

# PCA lighting noise (AlexNet style), Paddle's Lighting values, applied to B, G, R in [0, 1].
EIGVAL = np.array([0.2141788, 0.01817699, 0.00341571], dtype=np.float32)
EIGVEC = np.array([[-0.58752847, -0.69563484, 0.41340352],
                   [-0.5832747, 0.00994535, -0.81221408],
                   [-0.56089297, 0.71832671, 0.41158938]], dtype=np.float32)

SCALE_CHOICES = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)  # Paddle's np.arange(0.6, 1.4, 0.1)


def get_affine_transform(center: Sequence[float], scale: float | Sequence[float],
                         output_size: Sequence[int], inverse: bool = False) -> np.ndarray:
    """The [2, 3] affine that maps a region of ``scale`` pixels wide around ``center`` (x, y) onto
    an ``output_size`` (width, height) image, centre to centre (CenterNet's 3-point construction).

    Only the width of ``scale`` sets the zoom (``output_w / scale_w``, same in x and y), as in the
    original. Three point pairs define it: the centre, a point half a width above the centre, and
    that point turned 90 degrees about it. ``inverse=True`` gives the map from output to source.
    """
    # the width in float32, as Paddle's and the original's code hold it: a draw such as
    # 480 * 0.7000000000000001 then gives bit-identical matrices (cv2 warps in fixed point, so one
    # ulp in the matrix moves some output pixels by a gray level or two)
    scale_w = float(np.float32(scale[0] if np.ndim(scale) else scale))
    output_w, output_h = float(output_size[0]), float(output_size[1])
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = center
    src[1] = src[0] + (0.0, -0.5 * scale_w)
    dst[0] = (0.5 * output_w, 0.5 * output_h)
    dst[1] = dst[0] + (0.0, -0.5 * output_w)
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])
    if inverse:
        return cv2.getAffineTransform(dst, src)
    return cv2.getAffineTransform(src, dst)


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a - b`` turned 90 degrees anticlockwise, placed at ``b``."""
    direction = a - b
    return b + np.array([-direction[1], direction[0]], dtype=np.float32)


def get_border(border: int, size: int) -> int:
    """Paddle's ``get_border``: halve ``border`` until the image keeps some room inside it."""
    divisor = 1
    while size - border // divisor <= border // divisor:
        divisor *= 2
    return border // divisor


def normalize(image_bgr: np.ndarray) -> np.ndarray:
    """BGR float image in [0, 1] ``[H, W, 3]`` -> ``(x - MEAN) / STD`` as float32 ``[3, H, W]``."""
    image = (image_bgr.astype(np.float32) - MEAN) / STD
    return np.ascontiguousarray(image.transpose(2, 0, 1))  # [3, H, W]


def denormalize(image: np.ndarray) -> np.ndarray:
    """A normalised ``[3, H, W]`` network input (numpy or tensor) -> RGB uint8 ``[H, W, 3]``."""
    image = np.asarray(image, dtype=np.float32).transpose(1, 2, 0)  # [H, W, 3] BGR
    image = (image * STD + MEAN) * 255.0
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)[:, :, ::-1].copy()


def affine_points(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Apply a [2, 3] affine to points ``[..., 2]``."""
    return points @ affine[:, :2].T + affine[:, 2]


def warp_boxes(boxes: np.ndarray, affine: np.ndarray, width: int, height: int) -> np.ndarray:
    """Map xyxy boxes ``[N, 4]`` through ``affine`` by their two corners and clip them to the
    ``width`` x ``height`` image. Boxes that end up empty are kept (targets skip them)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    corners = affine_points(boxes.reshape(-1, 2), affine).reshape(-1, 4)  # [N, 4] x1 y1 x2 y2
    corners[:, 0::2] = np.clip(corners[:, 0::2], 0, width)
    corners[:, 1::2] = np.clip(corners[:, 1::2], 0, height)
    return corners.astype(np.float32)


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The [2, 3] affine ``outer(inner(p))``."""
    return (np.vstack([outer, (0, 0, 1)]) @ np.vstack([inner, (0, 0, 1)]))[:2].astype(np.float32)


def _warp(image_rgb: np.ndarray, affine: np.ndarray, width: int, height: int) -> np.ndarray:
    """Warp an RGB uint8 image with bilinear sampling and a black border; returns BGR uint8."""
    image_bgr = np.ascontiguousarray(image_rgb[:, :, ::-1])
    return cv2.warpAffine(image_bgr, affine, (width, height), flags=cv2.INTER_LINEAR)


def _check_image(image: np.ndarray) -> None:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3 and image.shape[0] > 0 and image.shape[1] > 0):
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {dtype} of shape {shape}")


class EvalTransform:
    """Paddle's eval/test pipeline (WarpAffine + NormalizeImage), deterministic.

    ``keep_res=True`` (Paddle's eval default): the image keeps its scale and is centred (at pixel
    ``side // 2``) in a canvas of ``(side | 31) + 1`` pixels per side, the smallest multiple of 32
    above the side (a side of 500 gets 512, a side of 512 gets 544). ``keep_res=False``: the image is
    scaled by ``input_w / max(h, w)`` (aspect kept) and centred in ``input_size`` (height, width). Call as
    ``(image_rgb_uint8, boxes_xyxy, labels, rng=None) -> (image [3, H, W], boxes, labels,
    inverse_affine [2, 3])``; :meth:`at_scale` gives the input of a multi-scale test.
    """

    def __init__(self, input_size: tuple[int, int] = (512, 512), keep_res: bool = True, pad: int = 31):
        self.input_size = tuple(int(side) for side in input_size)
        self.keep_res = keep_res
        self.pad = pad

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                 rng: np.random.Generator | None = None):
        tensor, affine, inverse = self._prepare(image, 1.0)
        boxes = warp_boxes(boxes, affine, tensor.shape[2], tensor.shape[1])
        return tensor, boxes, np.asarray(labels, dtype=np.int64), inverse

    def at_scale(self, image: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """The original CenterNet's test input at ``scale``: ``image`` resized by ``scale``, then the
        affine above. Returns the normalised input ``[3, h, w]`` and the ``[2, 3]`` affine from its
        pixels back to ``image``'s (scale 1 gives exactly what calling the transform gives)."""
        tensor, _, inverse = self._prepare(image, scale)
        return tensor, inverse if scale == 1 else (inverse / np.float32(scale))

    def _prepare(self, image: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(input [3, h, w], affine from the resized image to it, its inverse)."""
        _check_image(image)
        if not scale > 0:
            raise ValueError(f"test scale must be positive, got {scale}")
        height, width = image.shape[:2]
        new_h, new_w = max(1, int(height * scale)), max(1, int(width * scale))
        if self.keep_res:
            input_h, input_w = (new_h | self.pad) + 1, (new_w | self.pad) + 1
            center = np.array([new_w // 2, new_h // 2], dtype=np.float32)
            size = np.array([input_w, input_h], dtype=np.float32)
        else:  # the zoom stays that of scale 1, so the content shrinks or grows in the fixed input
            input_h, input_w = self.input_size
            center = np.array([new_w / 2.0, new_h / 2.0], dtype=np.float32)
            size = float(max(height, width))
        if scale != 1:
            image = cv2.resize(image, (new_w, new_h))
        affine = get_affine_transform(center, size, (input_w, input_h))
        inverse = get_affine_transform(center, size, (input_w, input_h), inverse=True)
        warped = _warp(image, affine, input_w, input_h).astype(np.float32) / 255.0  # [h, w, 3] BGR
        return normalize(warped), affine, inverse.astype(np.float32)


class TrainTransform:
    """Paddle's training pipeline: FlipWarpAffine (random scale and centre, horizontal flip) ->
    CenterRandColor -> Lighting -> NormalizeImage, to a fixed ``input_size`` (height, width).

    The crop: scale ``s = max(h, w) * choice(scale_choices)``, centre drawn uniformly from the image
    less a border of ``get_border(border, side)`` pixels. All randomness comes from ``rng``.

    Two deliberate differences from Paddle: a flipped box is mirrored as ``x -> w - x`` (the image
    content's true mirror; Paddle's ``w - x - 1`` puts the box one pixel off its object), and the
    colour jitter blends with the true gray mean (Paddle's saturation step scales its gray image in
    place, so a later contrast step used a darkened mean). An image without boxes is augmented like
    any other (Paddle's operator returns it untouched; its data set never feeds one).

    After a flip, ``inverse_affine`` maps back to the unflipped original (x -> w - x included), so
    boxes mapped through it come out with x1 and x2 exchanged.
    """

    def __init__(self, input_size: tuple[int, int] = (512, 512), flip_prob: float = 0.5,
                 scale_choices: Sequence[float] = SCALE_CHOICES, border: int = 128, color: bool = True,
                 lighting: bool = True, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, lighting_std: float = 0.1):
        self.input_size = tuple(int(side) for side in input_size)
        self.flip_prob = flip_prob
        self.scale_choices = tuple(scale_choices)
        self.border = border
        self.color = color
        self.lighting = lighting
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation
        self.lighting_std = lighting_std

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                 rng: np.random.Generator):
        _check_image(image)
        height, width = image.shape[:2]
        input_h, input_w = self.input_size
        scale = max(height, width) * float(rng.choice(self.scale_choices))
        border_x, border_y = get_border(self.border, width), get_border(self.border, height)
        center = np.array([rng.integers(border_x, width - border_x),
                           rng.integers(border_y, height - border_y)], dtype=np.float32)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
        flip = rng.random() < self.flip_prob
        if flip:  # mirror the image (pixel x -> w - 1 - x), its crop centre and its boxes
            image = image[:, ::-1]
            center[0] = width - 1 - center[0]
            boxes[:, [0, 2]] = width - boxes[:, [2, 0]]

        affine = get_affine_transform(center, scale, (input_w, input_h))
        inverse = get_affine_transform(center, scale, (input_w, input_h), inverse=True)
        if flip:  # back to the unflipped original: x -> w - x after the inverse warp
            inverse = _compose(np.array([[-1, 0, width], [0, 1, 0]], dtype=np.float32), inverse)
        warped = _warp(image, affine, input_w, input_h).astype(np.float32) / 255.0  # [h, w, 3] BGR
        if self.color:
            warped = self._color_jitter(warped, rng)
        if self.lighting:
            alpha = rng.normal(scale=self.lighting_std, size=3).astype(np.float32)
            warped += EIGVEC @ (EIGVAL * alpha)
        boxes = warp_boxes(boxes, affine, input_w, input_h)
        return normalize(warped), boxes, np.asarray(labels, dtype=np.int64), inverse.astype(np.float32)

    def _color_jitter(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Brightness, contrast and saturation, each a blend by ``1 + U(-a, a)``, in random order."""
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[:, :, None]  # [h, w, 1], from the input
        steps = [("brightness", self.brightness), ("contrast", self.contrast), ("saturation", self.saturation)]
        for i in rng.permutation(len(steps)):
            name, amount = steps[i]
            alpha = np.float32(1.0 + rng.uniform(-amount, amount))
            if name == "brightness":
                image = image * alpha
            elif name == "contrast":
                image = image * alpha + gray.mean() * (1 - alpha)
            else:
                image = image * alpha + gray * (1 - alpha)
        return image.astype(np.float32)
