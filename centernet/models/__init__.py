"""CenterNet models: the detector, its parts, and the registry of zoo models."""

from . import zoo  # noqa: F401  (registers the zoo models)
from .centernet import CenterNet
from .registry import create_model, list_models, register_model

__all__ = ["CenterNet", "create_model", "list_models", "register_model"]
