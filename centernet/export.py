"""ONNX export with the decode inside the graph, and ``OnnxDetector`` to run it with onnxruntime.

The exported graph takes the normalised image batch ``images [B, 3, H, W]`` (what
``EvalTransform`` makes) and returns the top-K detections, with no Python post-processing left::

    boxes  [B, K, 4] float32   xyxy in INPUT pixels (the decoded boxes times the stride, 4)
    scores [B, K]    float32   sigmoid scores, sorted high to low
    labels [B, K]    int64     class indices

The batch size is always dynamic; height and width are fixed (the ``input_size`` of the export)
unless ``dynamic_size=True``. :func:`centernet.decode.decode` exports as it is (sigmoid, 3x3
max-pool peaks, TopK). The deformable convolutions (DLA-34's neck, ResNet-50's last stage) take
one of two forms, both standard ONNX that stock onnxruntime runs on CPU:

* ``deform_conv="onnx"`` (default, opset 19): ONNX's ``DeformConv`` operator. Its offset layout
  (one (y, x) pair per kernel tap) is ours and torchvision's, so the layer maps 1:1; onnxruntime's
  CPU kernel is as fast as our gather path.
* ``deform_conv="gather"`` (opset 17 or later): the exact decomposition of
  :func:`~centernet.models.deform_conv.gather_deform_conv2d` (bilinear corner indices and
  weights, Gather, weighted sum, MatMul), for runtimes without ``DeformConv`` (TensorRT before
  its DeformConv plugin, older onnxruntime). Under export its fused ``embedding_bag`` is written
  as Gather + Mul + ReduceSum (PyTorch's own export of it is a slow Loop).

Both are forms the deformable layers themselves have (their ``implementation``, see
:mod:`centernet.models.deform_conv`); the export sets it on each layer for the time of the trace.

The file's metadata records the model name, class names, stride, input size and whether the size
is dynamic, so :class:`OnnxDetector` needs nothing else.

    centernet export --model centernet_dla34 --weights centernet_dla34_140e_coco.pdparams
    detector = centernet.OnnxDetector("centernet_dla34.onnx", score_threshold=0.3)
    detections = detector("street.jpg")
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .decode import decode
from .inference import BaseDetector
from .io import write_bytes
from .models.deform_conv import deform_conv_implementation

__all__ = ["DetectionGraph", "export_onnx", "OnnxDetector"]

OUTPUT_NAMES = ["boxes", "scores", "labels"]
# the first opset of each deformable-conv form (ONNX's DeformConv came with opset 19)
MIN_OPSET = {"onnx": 19, "gather": 17}


class DetectionGraph(nn.Module):
    """``model`` followed by the decode: ``images [B, 3, H, W] -> (boxes, scores, labels)``.

    Boxes are in input pixels (decoded output-map boxes times ``model.stride``); see the module
    docstring for the shapes. This is the module that :func:`export_onnx` traces.
    """

    def __init__(self, model: nn.Module, max_detections: int = 100):
        super().__init__()
        self.model = model
        self.max_detections = max_detections

    def forward(self, images):
        outputs = self.model(images)  # raw maps at stride 4
        boxes, scores, labels = decode(outputs["heatmap"], outputs["wh"], outputs["offset"],
                                       k=self.max_detections)  # [B, K, 4] on the output map
        return boxes * self.model.stride, scores, labels  # boxes in input pixels


def export_onnx(model: nn.Module, path: str | Path, input_size: tuple[int, int] = (512, 512),
                dynamic_size: bool = False, max_detections: int = 100,
                class_names: Sequence[str] | None = None, model_name: str | None = None,
                deform_conv: str = "onnx", opset_version: int | None = None,
                keep_res: bool | None = None) -> Path:
    """Write ``model`` (a :class:`~centernet.models.CenterNet`) with its decode as ONNX to ``path``.

    Args:
        input_size: (height, width) of the traced input, multiples of 32; with ``dynamic_size``
            any multiple of 32 runs, otherwise exactly this size.
        dynamic_size: let height and width vary (the batch size always may).
        max_detections: K, detections per image (fewer if the map has fewer class-positions).
        class_names, model_name: stored in the file's metadata for :class:`OnnxDetector`.
        deform_conv: ``"onnx"`` (ONNX DeformConv) or ``"gather"`` (exact decomposition); see the
            module docstring.
        opset_version: default: the first opset that has the chosen deformable-conv form.
        keep_res: the evaluation mode :class:`OnnxDetector` uses by default, stored in the file:
            each image at its own resolution (needs ``dynamic_size``) or resized to
            ``input_size``; default: ``dynamic_size``.
    Checks the graph with ``onnx.checker``, writes it atomically (a failed export leaves an
    earlier file at ``path`` whole) and returns ``path``.
    """
    import onnx

    if deform_conv not in MIN_OPSET:
        raise ValueError(f"deform_conv={deform_conv!r}: use 'onnx' or 'gather'")
    opset_version = opset_version or MIN_OPSET[deform_conv]
    if opset_version < MIN_OPSET[deform_conv]:
        raise ValueError(f"deform_conv={deform_conv!r} needs opset {MIN_OPSET[deform_conv]} or later, "
                         f"got {opset_version}")
    keep_res = dynamic_size if keep_res is None else bool(keep_res)
    if keep_res and not dynamic_size:
        raise ValueError("keep_res (each image at its own resolution) needs a graph of dynamic size")
    if int(max_detections) < 1:
        raise ValueError(f"max_detections must be at least 1, got {max_detections}")
    height, width = (int(side) for side in input_size)
    divisor = getattr(model, "size_divisor", 32)
    if height % divisor or width % divisor:
        raise ValueError(f"export input size {height}x{width}: height and width must be "
                         f"multiples of {divisor}")
    num_classes = model.num_classes
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a model of {num_classes} classes")
    path = Path(path)
    graph = DetectionGraph(model, max_detections).eval()
    example = torch.zeros(1, 3, height, width)
    exported = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
    dynamic_axes = {"images": axes, **{name: {0: "batch"} for name in OUTPUT_NAMES}}
    with warnings.catch_warnings():
        # the tracer warns about Python values taken from shapes (the model's size check, the
        # decode's K clamp); both are exported correctly for any size of a dynamic graph
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        with torch.no_grad(), deform_conv_implementation(model, deform_conv):
            torch.onnx.export(graph, (example,), exported, dynamo=False,
                              opset_version=opset_version, input_names=["images"],
                              autograd_inlining=False,  # keep DeformConv nodes whole
                              output_names=OUTPUT_NAMES, dynamic_axes=dynamic_axes)
    proto = onnx.load_from_string(exported.getvalue())
    metadata = {
        "model": model_name or type(model).__name__,
        "num_classes": str(num_classes),
        "class_names": json.dumps(list(class_names) if class_names is not None else None),
        "stride": str(model.stride),
        "input_size": json.dumps([height, width]),
        "dynamic_size": json.dumps(bool(dynamic_size)),
        "keep_res": json.dumps(keep_res),
        "max_detections": str(max_detections),
        "deform_conv": deform_conv,
    }
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    return write_bytes(path, proto.SerializeToString())


class OnnxDetector(BaseDetector):
    """A detector (:class:`~centernet.inference.BaseDetector`, as :class:`centernet.Detector` is)
    running an exported graph in onnxruntime.

    Same preprocessing (``EvalTransform``), same results (boxes mapped back with the inverse
    affine, clipped to the image, thresholded), so ``predict()`` and ``evaluate()`` take either.
    The graph holds the decode, so there is no flip test and no heatmap view; one test scale.

    Args:
        path: a file written by :func:`export_onnx`.
        class_names: default: the names stored in the file (else COCO's for 80 classes).
        input_size, keep_res: as for ``Detector``; default: the file's (its input size, and the
            eval mode it was exported with, see :func:`export_onnx`). A fixed-size graph only runs
            its own size, so it always resizes to it (``keep_res`` must be False or None).
        threads: onnxruntime intra-op threads (default: onnxruntime's choice).
        providers: onnxruntime execution providers (default: CUDA when available, then CPU).
    """

    def __init__(self, path: str | Path, class_names: Sequence[str] | None = None,
                 input_size: tuple[int, int] | None = None, keep_res: bool | None = None,
                 score_threshold: float = 0.0, threads: int | None = None,
                 providers: Sequence[str] | None = None):
        import onnxruntime

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if providers is None:
            available = onnxruntime.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=list(providers))
        except Exception as error:  # onnxruntime raises its own exception types
            raise ValueError(f"{path}: onnxruntime cannot load it ({error})") from error
        metadata = self.session.get_modelmeta().custom_metadata_map
        if "input_size" not in metadata:
            raise ValueError(f"{path}: no centernet metadata; export it with `centernet export`")
        self.path = path
        self.stride = int(metadata["stride"])
        self.dynamic_size = json.loads(metadata["dynamic_size"])
        if not self.dynamic_size:
            if keep_res:
                raise ValueError(f"{path}: the graph has a fixed input size; keep_res needs an "
                                 "export with --dynamic")
            if input_size is not None and tuple(input_size) != tuple(json.loads(metadata["input_size"])):
                raise ValueError(f"{path}: the graph runs only {metadata['input_size']}, not {input_size}")
        stored_keep_res = json.loads(metadata.get("keep_res", json.dumps(self.dynamic_size)))
        stored_names = json.loads(metadata.get("class_names", "null"))
        super().__init__(int(metadata["num_classes"]), class_names if class_names is not None else stored_names,
                         tuple(input_size or json.loads(metadata["input_size"])),
                         stored_keep_res if keep_res is None else keep_res,
                         int(metadata["max_detections"]), score_threshold)
        self.flip = False  # as Detector's: the graph holds the decode, so no flip test
        self.device = torch.device("cpu")  # where the detections come back (onnxruntime returns numpy)

    def raw_detections(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The exported graph (model and decode) on ``images``: top-K boxes in input pixels."""
        boxes, scores, labels = self.session.run(
            OUTPUT_NAMES, {"images": images.float().contiguous().numpy()})
        return torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels)
