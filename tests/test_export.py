"""ONNX export with the decode inside: every zoo model exports, passes onnx.checker, and
onnxruntime's detections equal PyTorch's; OnnxDetector and `predict --backend onnx` equal Detector.

The deformable conv's own gather path is tested against torchvision's op in test_deform_conv.py
(forward, backward, offsets far outside the image); here the two exported forms of it (ONNX's
DeformConv node run by onnxruntime's kernel, and the Gather + ReduceSum decomposition) are held
to torchvision's op the same way.
"""

import functools
import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import deform_conv2d

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from centernet.cli import main as cli_main  # noqa: E402
from centernet.decode import decode  # noqa: E402
from centernet.engine.predict import Detector  # noqa: E402
from centernet.export import OnnxDetector, export_onnx  # noqa: E402
from centernet.models import create_model, list_models  # noqa: E402
from centernet.models.deform_conv import DeformConv2d  # noqa: E402

ZOO = ["centernet_dla34", "centernet_r50", "centernet_mbv1", "centernet_mbv3_small",
       "centernet_mbv3_large", "centernet_shufflenetv2"]
WITH_DCN = ["centernet_dla34", "centernet_r50"]


@functools.cache
def lively_model(name, size=(96, 96), num_classes=3, seed=0):
    """Zoo model ``name`` (a 64-plane head, to be quick) with seeded :func:`lively` weights fitted
    to ``smooth_images(2, *size)``; cached, so callers must not change it."""
    torch.manual_seed(seed)
    model = create_model(name, num_classes=num_classes, head_planes=64)
    return lively(model, smooth_images(2, *size), seed)


def lively(model, images, seed=0):
    """Make a freshly built model's outputs spread out, as trained weights are, so a wrong
    layer or a wrong order shows: random BatchNorm scales and shifts with running statistics
    taken from ``images`` (activations stay O(1) through the depth), non-zero conv biases,
    deformable offsets of about a pixel (some sampling outside the image), heatmap logits with std 2 (distinct
    scores, no ties) and box sizes of about 16 output pixels."""
    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.2, generator=generator)
                module.momentum = 1.0  # the next training-mode pass sets the running statistics
            elif name.endswith("conv_offset"):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, 0.5 / math.sqrt(fan_in), generator=generator)
            elif getattr(module, "bias", None) is not None:  # conv biases start at zero
                module.bias.add_(torch.randn(module.bias.shape, generator=generator), alpha=0.1)
        model.train()(images)
        for module in norms:
            module.momentum = 0.1
            # a floor under the variance: near-constant channels would otherwise amplify float
            # rounding hundreds of times, and float32 could not match anything
            module.running_var += 0.1 * module.running_var.mean()
        model.eval()
        outputs = model(images)
        model.head.heatmap[2].conv.weight *= 2.0 / outputs["heatmap"].std()
        model.head.size[2].conv.weight *= 16.0 / outputs["wh"].std()
    return model


def smooth_images(batch, height, width, seed=0):
    """Normalised-scale images with structure at several scales (not white noise)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, 3, height // 16, width // 16, generator=generator)
    images = nn.functional.interpolate(coarse, size=(height, width), mode="bilinear")
    return images + 0.3 * torch.randn(batch, 3, height, width, generator=generator)


def torch_detections(model, images, k=100):
    """The reference: PyTorch maps, decode, boxes times the stride (input pixels)."""
    with torch.no_grad():
        outputs = model(images)
        boxes, scores, labels = decode(outputs["heatmap"], outputs["wh"], outputs["offset"], k=k)
    return (boxes * model.stride).numpy(), scores.numpy(), labels.numpy()


def assert_same_detections(got, expected, size, score_tolerance=1e-4):
    """Same top-K: sorted scores close, and every detection found in the reference with the
    same label, a box within 1e-3 of the input size and a close score. Scores closer than the
    tolerance may come in either order, so the matching is by value, not by rank; a detection
    may be missing only where its score ties the K-th."""
    boxes, scores, labels = got
    ref_boxes, ref_scores, ref_labels = expected
    assert boxes.shape == ref_boxes.shape and labels.dtype == np.int64
    np.testing.assert_allclose(scores, ref_scores, atol=score_tolerance)
    box_tolerance = 1e-3 * size
    for b in range(len(scores)):
        used = np.zeros(len(ref_scores[b]), bool)
        for box, score, label in zip(boxes[b], scores[b], labels[b]):
            close = (~used & (ref_labels[b] == label) & (np.abs(ref_scores[b] - score) <= score_tolerance)
                     & (np.abs(ref_boxes[b] - box).max(axis=1) <= box_tolerance))
            if close.any():
                used[np.flatnonzero(close)[0]] = True
            else:
                assert score - ref_scores[b, -1] <= score_tolerance, (
                    f"image {b}: detection {label} {score:.5f} {box} not in the reference")


def run_graph(path, images):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["boxes", "scores", "labels"], {"images": images.numpy()})


def test_zoo_list_is_the_tested_list():
    assert set(ZOO) <= set(list_models())


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_exports_and_onnxruntime_equals_pytorch(name, tmp_path):
    images = smooth_images(2, 96, 96)
    model = lively_model(name)
    path = export_onnx(model, tmp_path / f"{name}.onnx", input_size=(96, 96),
                       class_names=["a", "b", "c"], model_name=name)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = {node.op_type for node in proto.graph.node}
    assert {node.domain for node in proto.graph.node} <= {"", "ai.onnx"}  # no custom operators
    assert ("DeformConv" in ops) == (name in WITH_DCN)
    assert {"TopK", "MaxPool", "Sigmoid"} <= ops  # the decode is in the graph
    assert_same_detections(run_graph(path, images), torch_detections(model, images), 96)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_gather_form_has_no_deformconv_and_runs_any_size(tmp_path):
    """The decomposition for runtimes without DeformConv; dynamic batch and size."""
    model = lively_model("centernet_dla34", num_classes=2)
    path = export_onnx(model, tmp_path / "dla.onnx", input_size=(96, 96), dynamic_size=True,
                       deform_conv="gather", max_detections=50)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "DeformConv" not in ops and "Loop" not in ops
    images = smooth_images(3, 64, 128, seed=1)  # another batch size and an oblong size
    got = run_graph(path, images)
    assert got[0].shape == (3, 50, 4)
    assert_same_detections(got, torch_detections(model, images, k=50), 128)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("form", ["onnx", "gather"])
@pytest.mark.parametrize("stride", [1, 2])
def test_exported_deform_conv_equals_torchvision(form, stride, tmp_path):
    """Offsets up to +-6 pixels on a 9x11 map (many taps sample outside), a real mask, a bias."""
    from centernet.export import _deform_conv_export

    torch.manual_seed(0)
    layer = DeformConv2d(5, 4, 3, stride=stride).eval()
    nn.init.normal_(layer.conv_offset.weight, std=1.0)
    nn.init.uniform_(layer.conv_dcn.bias, -1, 1)
    path = tmp_path / "dcn.onnx"
    opset = {"onnx": 19, "gather": 17}[form]
    with torch.no_grad(), _deform_conv_export(form, opset):
        torch.onnx.export(layer, (torch.randn(1, 5, 9, 11),), str(path), dynamo=False,
                          opset_version=opset, autograd_inlining=False, input_names=["x"],
                          dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}})
    x = torch.randn(2, 5, 13, 10)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        offset_mask = layer.conv_offset(x)
        offset, mask = offset_mask[:, :18], offset_mask[:, 18:].sigmoid()
        assert offset.abs().max() > 3  # some taps land outside the image
        expected = deform_conv2d(x, offset, layer.conv_dcn.weight, layer.conv_dcn.bias,
                                 stride=stride, padding=1, mask=mask).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.fixture(scope="module")
def small_model():
    return lively_model("centernet_mbv3_small", size=(128, 128))


def photos(seed=0):
    """Two uint8 RGB 'photos' of different sizes and aspect ratios."""
    rng = np.random.default_rng(seed)
    images = []
    for height, width in ((150, 200), (120, 97)):
        coarse = rng.integers(0, 256, (height // 10 + 1, width // 10 + 1, 3)).astype(np.uint8)
        images.append(np.kron(coarse, np.ones((10, 10, 1), np.uint8))[:height, :width].copy())
    return images


def assert_same_results(got, expected, image_sizes):
    for result, reference, (height, width) in zip(got, expected, image_sizes):
        assert set(result) == {"boxes", "scores", "labels"}
        as_arrays = [tuple(r[k].numpy()[None] for k in ("boxes", "scores", "labels"))
                     for r in (result, reference)]
        assert_same_detections(*as_arrays, max(height, width))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("dynamic_size", [False, True])
def test_onnx_detector_equals_detector(small_model, dynamic_size, tmp_path):
    path = export_onnx(small_model, tmp_path / "m.onnx", input_size=(128, 128),
                       dynamic_size=dynamic_size, class_names=["x", "y", "z"])
    onnx_detector = OnnxDetector(path, threads=1)
    assert onnx_detector.class_names == ["x", "y", "z"]
    assert onnx_detector.keep_res == dynamic_size  # a fixed graph resizes to its own size
    detector = Detector(small_model, input_size=(128, 128), keep_res=dynamic_size, device="cpu")
    images = photos()
    assert_same_results(onnx_detector.detect_images(images), detector.detect_images(images),
                        [image.shape[:2] for image in images])


def test_onnx_detector_refuses_what_it_cannot_run(small_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        OnnxDetector(tmp_path / "missing.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="garbage.onnx"):
        OnnxDetector(garbage)
    path = export_onnx(small_model, tmp_path / "fixed.onnx", input_size=(128, 128))
    with pytest.raises(ValueError, match="fixed input size"):
        OnnxDetector(path, keep_res=True)
    with pytest.raises(ValueError, match="runs only"):
        OnnxDetector(path, input_size=(256, 256))


def test_export_refuses_bad_arguments(small_model, tmp_path):
    with pytest.raises(ValueError, match="multiples of 32"):
        export_onnx(small_model, tmp_path / "m.onnx", input_size=(100, 128))
    with pytest.raises(ValueError, match="deform_conv"):
        export_onnx(small_model, tmp_path / "m.onnx", deform_conv="plugin")
    with pytest.raises(ValueError, match="opset 19"):
        export_onnx(small_model, tmp_path / "m.onnx", opset_version=17)
    with pytest.raises(ValueError, match="2 class names for a model of 3 classes"):
        export_onnx(small_model, tmp_path / "m.onnx", class_names=["a", "b"])
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cli_export_then_predict_with_onnx_backend(tmp_path, capsys):
    import cv2

    path = tmp_path / "model.onnx"
    assert cli_main(["export", "--model", "centernet_mbv3_small", "--num-classes", "3",
                     "--input-size", "128", "--out", str(path)]) == 0
    assert path.is_file() and "model.onnx" in capsys.readouterr().out
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert metadata["model"] == "centernet_mbv3_small" and json.loads(metadata["input_size"]) == [128, 128]

    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(photos()):
        cv2.imwrite(str(folder / f"{i}.png"), image[:, :, ::-1])
    out = tmp_path / "predictions"
    assert cli_main(["predict", str(folder), "--weights", str(path), "--backend", "onnx",
                     "--score-threshold", "0", "--out", str(out)]) == 0
    records = json.loads((out / "predictions.json").read_text())
    assert [r["file"].rsplit("/", 1)[-1] for r in records] == ["0.png", "1.png"]
    for record, image in zip(records, photos()):
        height, width = image.shape[:2]
        assert 0 < len(record["detections"]) <= 100
        for detection in record["detections"]:
            x1, y1, x2, y2 = detection["box"]
            assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
            assert detection["class"] in {"0", "1", "2"} and detection["score"] > 0
    assert (out / "0.jpg").is_file()
