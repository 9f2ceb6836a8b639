"""Loading weights from PaddleDetection (``.pdparams``), the original CenterNet (``.pth``), our own
checkpoints and safetensors, safely (no code from the file ever runs); ImageNet backbone weights;
conversion to safetensors."""

from .backbone import BackboneReport, load_backbone_weights
from .convert import Converted, convert_weights
from .loading import LoadReport, WeightsMismatchError, load_weights, read_weights
from .pdparams import UnsafeWeightsError, WeightsError, WeightsFormatError, read_pdparams

__all__ = ["load_weights", "read_weights", "read_pdparams", "load_backbone_weights", "convert_weights",
           "LoadReport", "BackboneReport", "Converted", "WeightsError", "UnsafeWeightsError",
           "WeightsFormatError", "WeightsMismatchError"]
