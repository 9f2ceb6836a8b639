"""Image decoding: any common file to an RGB uint8 array, or a clear error.

PaddleDetection decodes with ``cv2.imdecode(..., IMREAD_COLOR)`` (EXIF orientation applied, alpha
dropped) and converts BGR to RGB; ``load_image`` gives the same pixels with Pillow, and also handles
16-bit and palette images and refuses truncated files instead of filling them with grey.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError, ImageTooLargeError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # what a folder of images holds
_SIXTEEN_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


def load_image(path: str | Path) -> np.ndarray:
    """Read ``path`` as RGB uint8 ``[H, W, 3]`` with its EXIF orientation applied.

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit images are converted to 8-bit RGB.
    Raises ``ImageLoadError`` naming the file for a missing, unreadable or truncated image.
    """
    path = Path(path)
    if path.is_dir():
        raise ImageLoadError(f"{path}: is a folder, not an image file")
    if not path.is_file():
        raise ImageLoadError(f"{path}: image file not found")
    return _decode(path, str(path))


def list_images(source: str | Path) -> list[Path]:
    """An image file, or the image files of a folder (sorted; entries that are not files, such as
    a folder named ``x.jpg``, are passed over), with a clear error otherwise."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise FileNotFoundError(f"{source}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
        return files
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    return [source]


def decode_image(data: bytes, name: str = "image", max_pixels: int | None = None) -> np.ndarray:
    """``load_image`` for the bytes of an image file (an upload), named ``name`` in errors.

    Raises ``ImageLoadError`` for empty, unreadable or truncated data, and ``ImageTooLargeError``
    (before decoding the pixels) when width x height is over ``max_pixels``.
    """
    if not data:
        raise ImageLoadError(f"{name}: empty (0 bytes)")
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(source: str | Path | BinaryIO, name: str, max_pixels: int | None = None) -> np.ndarray:
    try:
        with Image.open(source) as image:
            width, height = image.size  # from the header, before any pixel is decoded
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLargeError(f"{name}: {width}x{height} = {width * height:,} pixels, "
                                         f"over the limit of {max_pixels:,}")
            image.load()  # decodes now: a truncated file raises here
            image = ImageOps.exif_transpose(image)
            return _to_rgb_array(image)
    except UnidentifiedImageError:
        raise ImageLoadError(f"{name}: not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        if isinstance(error, ImageLoadError):
            raise
        raise ImageLoadError(f"{name}: cannot decode image ({error})") from None


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """Pillow image of any mode -> RGB uint8 [H, W, 3]."""
    if image.mode in _SIXTEEN_BIT_MODES:
        gray = np.asarray(image, dtype=np.float64)  # [H, W] in 0..65535
        gray = np.clip(np.rint(gray / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "F":
        gray = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # palette transparency goes through RGBA, then alpha is dropped
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
