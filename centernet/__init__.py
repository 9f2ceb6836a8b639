"""CenterNet (Objects as Points) in PyTorch."""

__version__ = "0.1.0"
