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

:func:`quantize_onnx` turns such a file into an INT8 one (onnxruntime's static quantization, QDQ
format, int8 weights per channel, activations calibrated on images through the detector's own
preprocessing); the decode and the deformable convolutions stay float, the metadata stays, and
:class:`OnnxDetector` runs it as it runs the float file.

    centernet export --model centernet_dla34 --weights centernet_dla34_140e_coco.pdparams
    detector = centernet.OnnxDetector("centernet_dla34.onnx", score_threshold=0.3)
    detections = detector("street.jpg")
    centernet export --model centernet_dla34 --weights ... --quantize int8 --calibration val/images
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .data.errors import ImageLoadError
from .data.images import list_images, load_image
from .data.transforms import EvalTransform
from .decode import decode
from .inference import BaseDetector
from .io import write_bytes
from .models.deform_conv import deform_conv_implementation

__all__ = ["DetectionGraph", "export_onnx", "OnnxDetector", "quantize_onnx", "calibration_images",
           "CALIBRATION_METHODS"]

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


# --- INT8: static quantization of an exported graph ---------------------------------------------

# onnxruntime's calibration methods under our flag's names
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
# The default, chosen by measurement: two centernet_mbv3_small runs trained on the synthetic demo
# preset (96 train / 24 val images, 128x128, head_planes 32; 30 epochs at lr 2e-3 and 60 at 5e-3,
# cosine), calibrated on 32 train images, compared with the float graph on the val split: the
# fraction of float detections above 0.1 that an INT8 one of the same class matches at IoU >= 0.9,
# the same the other way round, and val AP (float: 0.0308 and 0.0291):
#     minmax      0.730 / 0.770   back 0.716 / 0.789   AP 0.0310 / 0.0253
#     entropy     0.562 / 0.615   back 0.554 / 0.701   AP 0.0315 / 0.0293   (calibration ~4x slower there)
#     percentile  0.740 / 0.797   back 0.753 / 0.799   AP 0.0303 / 0.0263
# Those models were weak (AP 0.03). On a trained one, the demo's best.pt (`make demo`:
# centernet_mbv3_small, head 64, 192x192, val AP 42.10 / AP50 66.60 % in float), calibrated on 100
# of its train images and scored by `centernet eval --backend onnx` on its 200 val images:
#     minmax      AP 37.53   AP50 61.68
#     percentile  AP 39.89   AP50 63.27
#     entropy     AP 41.26   AP50 65.57   (the only one within 1 AP point of float)
# Accuracy on a trained model decides: entropy is the default (the whole export with 100 images
# took 13.8 s against 14.9 s with percentile on 2 cores).
DEFAULT_CALIBRATION_METHOD = "entropy"
# The network's nodes: torch.onnx names each node after the module that made it, and
# DetectionGraph holds the network as `model`, so its nodes (and only its nodes) are "/model/...";
# the decode around it (sigmoid, max-pool, top-K, box arithmetic) has names without that scope.
NETWORK_SCOPE = "/model/"


def calibration_images(source: str | Path | Sequence[str | Path], count: int) -> list[Path]:
    """Up to ``count`` readable image files of ``source`` (a folder, an image file, or a list of
    files), spread evenly over the folder's sorted listing so that a folder sorted by scene or time
    is sampled throughout. Unreadable files are passed over with one warning; ``FileNotFoundError``
    or ``ValueError`` names ``source`` when nothing is left."""
    if int(count) < 1:
        raise ValueError(f"calibration count must be at least 1, got {count}")
    files = list_images(source) if isinstance(source, (str, Path)) else [Path(file) for file in source]
    if not files:
        raise ValueError("no calibration images given")
    if len(files) > count:
        files = [files[i] for i in np.linspace(0, len(files) - 1, int(count)).round().astype(int)]
    readable, failures = [], []
    for file in files:
        try:
            load_image(file)
            readable.append(file)
        except ImageLoadError as error:
            failures.append(str(error))
    where = f"{source}" if isinstance(source, (str, Path)) else f"{len(files)} calibration files"
    if not readable:
        raise ValueError(f"{where}: none of its {len(files)} image file(s) could be read "
                         f"({failures[0]})")
    if failures:
        warnings.warn(f"{where}: {len(failures)} of {len(files)} image file(s) unreadable, "
                      f"calibrating on the other {len(readable)} ({failures[0]})", stacklevel=2)
    return readable


def quantize_onnx(source: str | Path, path: str | Path, calibration: str | Path | Sequence[str | Path],
                  calibration_count: int = 100, calibration_method: str = DEFAULT_CALIBRATION_METHOD) -> Path:
    """Write an INT8 copy of the exported graph ``source`` (a file from :func:`export_onnx`) to ``path``.

    Static quantization by onnxruntime's ``quantize_static``: QDQ format (QuantizeLinear /
    DequantizeLinear pairs that onnxruntime's CPU kernels fuse into integer convolutions), weights
    int8 per output channel, activations uint8 with ranges calibrated on real images. Only the
    network is quantized: the decode after it stays float, and so do operators with no integer
    kernel (the deformable convolutions of DLA-34 and ResNet-50). The file keeps the metadata of
    ``source``, so :class:`OnnxDetector` and ``predict/eval --backend onnx`` run it as they run
    the float graph.

    Args:
        calibration: a folder of images, an image, or a list of image files; see
            :func:`calibration_images` (``calibration_count`` of them, spread over the folder).
            Each goes through the detector's own preprocessing (the ``EvalTransform`` of
            ``OnnxDetector(source)``: its input size and eval mode), one image per run.
        calibration_method: ``"minmax"``, ``"entropy"`` or ``"percentile"`` (onnxruntime's
            calibrators).
    Checks the result with ``onnx.checker`` and writes it atomically (a failure leaves an earlier
    file at ``path`` whole); returns ``path``.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.onnx_model import ONNXModel

    if calibration_method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method {calibration_method!r}: choose one of "
                         f"{', '.join(CALIBRATION_METHODS)}")
    transform = OnnxDetector(source, providers=["CPUExecutionProvider"]).transform
    files = calibration_images(calibration, calibration_count)
    proto = onnx.load(str(source))
    _own_initializers(proto.graph)
    # Float: the decode (every node outside the network) and the layers whose maps it reads (the
    # head's last convolutions: heatmap logits, sizes, offsets). Measured on two trained models (see
    # DEFAULT_CALIBRATION_METHOD): with those maps in 8 bits, neighbouring heatmap cells round to
    # equal values, the 3x3 max-pool keeps each such plateau as several peaks, and INT8 (minmax)
    # gave 731 detections above 0.1 where float gave 315, AP 0.0278 against 0.0308 (the other
    # model: 0.0156 against 0.0291); with them in float, 317 detections and AP 0.0310 (0.0253),
    # for three 1x1 convolutions in float.
    decode = [node for node in proto.graph.node if not node.name.startswith(NETWORK_SCOPE)]
    if len(decode) == len(proto.graph.node) or "TopK" not in {node.op_type for node in decode}:
        raise ValueError(f"{source}: its node names do not set the network ({NETWORK_SCOPE}...) apart "
                         "from the decode; export it again with this version's export_onnx")
    read_by_decode = {name for node in decode for name in node.input}
    float_nodes = decode + [node for node in proto.graph.node if node.name.startswith(NETWORK_SCOPE)
                            and read_by_decode.intersection(node.output)]
    with tempfile.TemporaryDirectory(prefix="centernet-int8-") as folder, _quiet_quantizer():
        quantized = Path(folder) / "int8.onnx"
        quantize_static(
            proto, quantized, _CalibrationImages(files, transform),
            quant_format=QuantFormat.QDQ, per_channel=True,
            # unsigned activations and signed weights: onnxruntime's advice for x86 CPUs (its
            # integer kernels take u8 x s8); full 8-bit weights, as it advises for cores with
            # VNNI (these have it; without VNNI it advises 7-bit weights, reduce_range=True)
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=False,
            nodes_to_exclude=[node.name for node in float_nodes],
            calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[calibration_method]),
            # ranges gathered image by image (the calibrator otherwise holds every activation of
            # every calibration image in memory at once)
            extra_options={"CalibStridedMinMax": 1})
        result = onnx.load(str(quantized))
    # the quantizer folds a Clip or Relu into the range of the QuantizeLinear after it and leaves
    # the Clip's bounds behind as Constant nodes that nothing reads (onnxruntime warns at every load)
    ONNXModel(result).remove_unused_constant()
    del result.metadata_props[:]
    result.metadata_props.extend(proto.metadata_props)
    for key, value in {"quantization": "int8", "calibration_method": calibration_method,
                       "calibration_images": str(len(files))}.items():
        entry = result.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(result, full_check=True)
    return write_bytes(Path(path), result.SerializeToString())


def _own_initializers(graph) -> None:
    """Give every layer its own weights: torch.onnx stores equal tensors once (zero biases, the
    neck's fixed bilinear up-sampling kernels) and hands the copy to the other layers through
    Identity nodes named outside any module's scope. The quantizer scales a bias by its own
    convolution's input and weight scales, so a bias shared through an Identity would reach the
    second convolution in the first one's scale, and it would count the Identity as decode.
    Written here because onnxruntime's pre-processing, which also removes them, fuses and renames
    nodes of the network (its HardSwish) that the split into network and decode goes by."""
    import onnx

    tensors = {tensor.name: tensor for tensor in graph.initializer}
    for node in [node for node in graph.node if node.op_type == "Identity" and node.input[0] in tensors]:
        own = onnx.TensorProto()
        own.CopyFrom(tensors[node.input[0]])
        own.name = node.output[0]
        graph.initializer.append(own)
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input} | {output.name for output in graph.output}
    unused = [tensor for tensor in graph.initializer if tensor.name not in used]
    for tensor in unused:
        graph.initializer.remove(tensor)


class _CalibrationImages:
    """onnxruntime's ``CalibrationDataReader`` over image files: ``{"images": [1, 3, H, W]}`` per
    image, made by ``transform`` (the detector's EvalTransform), read when asked for (one image's
    worth in memory). ``set_range`` and ``len`` let the calibrator take them a few at a time."""

    def __init__(self, files: Sequence[Path], transform: EvalTransform):
        self.files, self.transform = list(files), transform
        self.position, self.end = 0, len(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.position, self.end = start_index, min(end_index, len(self.files))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= self.end:
            return None
        tensor, _ = self.transform.at_scale(load_image(self.files[self.position]))  # [3, H, W]
        self.position += 1
        return {"images": np.ascontiguousarray(tensor[None], dtype=np.float32)}


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime's quantizer logs advice on the root logger ("consider pre-processing": shape
    inference and graph fusions that its session does anyway when it loads the file) and its
    histogram calibrators print their progress; keep both out of the command's output."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
