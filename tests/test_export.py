"""ONNX export with the decode inside: every zoo model exports, passes onnx.checker, and
onnxruntime's detections equal PyTorch's; OnnxDetector and `predict --backend onnx` equal Detector.

The deformable conv's own gather path is tested against torchvision's op in test_deform_conv.py
(forward, backward, offsets far outside the image); here the two exported forms of it (ONNX's
DeformConv node run by onnxruntime's kernel, and the Gather + ReduceSum decomposition) are held
to torchvision's op the same way.
"""

import json

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import deform_conv2d

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from centernet import list_models  # noqa: E402
from centernet.cli import main as cli_main  # noqa: E402
from centernet.decode import decode  # noqa: E402
from centernet.engine.predict import Detector  # noqa: E402
from centernet.export import OnnxDetector, export_onnx  # noqa: E402
from centernet.models.deform_conv import DeformConv2d, deform_conv_implementation  # noqa: E402
from conftest import ZOO, assert_same_detections, assert_same_results, lively_model, photos, smooth_images  # noqa: E402

WITH_DCN = ["centernet_dla34", "centernet_r50"]


def torch_detections(model, images, k=100):
    """The reference: PyTorch maps, decode, boxes times the stride (input pixels)."""
    with torch.no_grad():
        outputs = model(images)
        boxes, scores, labels = decode(outputs["heatmap"], outputs["wh"], outputs["offset"], k=k)
    return (boxes * model.stride).numpy(), scores.numpy(), labels.numpy()


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
@pytest.mark.parametrize("stride, bias", [(1, True), (2, True), (1, False)])
def test_exported_deform_conv_equals_torchvision(form, stride, bias, tmp_path):
    """Offsets up to +-6 pixels on a 9x11 map (many taps sample outside), a real mask, with a bias
    and without one (ResNet's deformable layer has none)."""
    torch.manual_seed(0)
    layer = DeformConv2d(5, 4, 3, stride=stride, bias=bias).eval()
    nn.init.normal_(layer.conv_offset.weight, std=1.0)
    if bias:
        nn.init.uniform_(layer.conv_dcn.bias, -1, 1)
    path = tmp_path / "dcn.onnx"
    opset = {"onnx": 19, "gather": 17}[form]
    with torch.no_grad(), deform_conv_implementation(layer, form):
        torch.onnx.export(layer, (torch.randn(1, 5, 9, 11),), str(path), dynamo=False,
                          opset_version=opset, autograd_inlining=False, input_names=["x"],
                          dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}})
    x = torch.randn(2, 5, 13, 10)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert ("DeformConv" in ops) == (form == "onnx")
    assert "Loop" not in ops  # the gather form's embedding_bag as Gather + Mul + ReduceSum, not PyTorch's Loop
    assert layer.implementation == "auto"  # the export form held for the block only
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


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("dynamic_size", [False, True])
def test_onnx_detector_equals_detector(small_model, dynamic_size, tmp_path):
    path = export_onnx(small_model, tmp_path / "m.onnx", input_size=(128, 128),
                       dynamic_size=dynamic_size, class_names=["x", "y", "z"])
    onnx_detector = OnnxDetector(path, threads=1)
    assert onnx_detector.class_names == ["x", "y", "z"]
    assert onnx_detector.transform.keep_res == dynamic_size  # a fixed graph resizes to its own size
    detector = Detector(small_model, input_size=(128, 128), keep_res=dynamic_size, device="cpu")
    for name in ("max_detections", "score_threshold", "scales", "merge", "flip", "device"):  # one interface
        assert getattr(onnx_detector, name) == getattr(detector, name), name
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
    for flag in (["--flip"], ["--scales", "0.5,1"], ["--heatmap"]):  # what only a PyTorch model can do
        assert cli_main(["predict", str(folder), "--weights", str(path), "--backend", "onnx", *flag]) == 2
        assert f"{flag[0]}: the ONNX backend runs the exported graph alone" in capsys.readouterr().err
