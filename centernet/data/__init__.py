"""Data: image decoding, CenterNet transforms, COCO-format data sets and synthetic scenes."""

from .coco import CocoDetection, collate, read_coco_json
from .errors import DataError, ImageLoadError
from .images import load_image
from .synthetic import CLASSES as SYNTHETIC_CLASSES, generate_dataset
from .transforms import MEAN, STD, EvalTransform, TrainTransform, denormalize, get_affine_transform

__all__ = ["CocoDetection", "collate", "read_coco_json", "DataError", "ImageLoadError", "load_image",
           "SYNTHETIC_CLASSES", "generate_dataset", "MEAN", "STD", "EvalTransform", "TrainTransform",
           "denormalize", "get_affine_transform"]
