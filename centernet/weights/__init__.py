"""Loading weights from PaddleDetection (``.pdparams``), the original CenterNet (``.pth``) and
our own checkpoints, safely (no code from the file ever runs)."""

from .loading import LoadReport, WeightsMismatchError, load_weights, read_weights
from .pdparams import UnsafeWeightsError, WeightsError, WeightsFormatError, read_pdparams

__all__ = ["load_weights", "read_weights", "read_pdparams", "LoadReport", "WeightsError",
           "UnsafeWeightsError", "WeightsFormatError", "WeightsMismatchError"]
