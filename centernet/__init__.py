"""CenterNet (Objects as Points) in PyTorch."""

__version__ = "0.1.0"
from .weights import load_weights  # noqa: E402,F401
