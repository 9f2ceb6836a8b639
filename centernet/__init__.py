"""CenterNet (Objects as Points) in PyTorch: PaddleDetection's model zoo, training, evaluation,
prediction and export.

    import centernet
    model = centernet.create_model("centernet_dla34", weights="centernet_dla34_140e_coco.pdparams")
    detections = centernet.Detector(model, score_threshold=0.3)("street.jpg")
"""

__version__ = "0.1.0"

from .builder import create_model  # noqa: E402
from .engine.predict import Detector  # noqa: E402
from .export import OnnxDetector, export_onnx  # noqa: E402
from .models import list_models  # noqa: E402
from .weights import load_weights  # noqa: E402

__all__ = ["Detector", "OnnxDetector", "export_onnx", "create_model", "list_models", "load_weights", "__version__"]
