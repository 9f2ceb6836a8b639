"""CenterNet models: the detector, its parts, and the registry of zoo models (structure only; the
weights are loaded one layer up, by :func:`centernet.create_model`)."""

from . import zoo  # noqa: F401  (registers the zoo models)
from .centernet import CenterNet
from .registry import build_model, list_models, register_model

__all__ = ["CenterNet", "build_model", "list_models", "register_model"]
