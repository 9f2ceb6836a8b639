"""INT8 export (``centernet export --quantize int8``, ``centernet.export.quantize_onnx``): every
zoo row quantizes into a checked graph of int8 convolutions around a float decode, its detections
agree with the float graph's, and bad calibration folders get one clear error line."""

import json

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

from centernet import create_model  # noqa: E402
from centernet.cli import main  # noqa: E402
from centernet.data.coco import CocoDetection, collate  # noqa: E402
from centernet.data.images import list_images, load_image  # noqa: E402
from centernet.data.transforms import EvalTransform  # noqa: E402
from centernet.engine.checkpoint import save_checkpoint  # noqa: E402
from centernet.export import NETWORK_SCOPE, OnnxDetector, export_onnx, quantize_onnx  # noqa: E402
from centernet.losses import CenterNetLoss  # noqa: E402
from conftest import MODEL, ZOO, lively_model, photos, tiny_config  # noqa: E402

WITH_DCN = ["centernet_dla34", "centernet_r50"]
DECODE_OPS = {"Sigmoid", "MaxPool", "TopK", "GatherElements"}


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    """A folder of six 'photos' (the kind of image the tests detect on, not the same ones)."""
    folder = tmp_path_factory.mktemp("calibration")
    for i, image in enumerate(photos(seed=1) + photos(seed=2) + photos(seed=3)):
        cv2.imwrite(str(folder / f"{i}.png"), image[:, :, ::-1])
    return folder


def int8_weights(graph):
    """Names of the int8 initializers that a DequantizeLinear turns into a Conv's weight."""
    int8 = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.INT8}
    made_by = {output: node for node in graph.node for output in node.output}
    weights = set()
    for node in graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            source = made_by.get(node.input[1])
            if source is not None and source.op_type == "DequantizeLinear" and source.input[0] in int8:
                weights.add(source.input[0])
    return weights


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_row_quantizes_around_a_float_decode(name, calibration, tmp_path):
    model = lively_model(name, size=(64, 64))
    fp32 = export_onnx(model, tmp_path / "fp32.onnx", input_size=(64, 64), model_name=name)
    path = quantize_onnx(fp32, tmp_path / "int8.onnx", calibration, calibration_count=2)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    graph = proto.graph
    ops = [node.op_type for node in graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    convs = sum(op in ("Conv", "ConvTranspose") for op in ops)
    assert len(int8_weights(graph)) >= 0.9 * convs  # the network's convolutions run on int8 weights
    made_by = {output: node for node in graph.node for output in node.output}
    decode = [node for node in graph.node if not node.name.startswith(NETWORK_SCOPE)
              and node.op_type not in ("QuantizeLinear", "DequantizeLinear")]
    assert DECODE_OPS <= {node.op_type for node in decode}
    for node in decode:  # float: no quantized tensor goes in, not even the head's maps
        assert all(made_by[i].op_type != "DequantizeLinear" for i in node.input if i in made_by), node.name
    floats = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    read_by_decode = {name for node in decode for name in node.input}
    outputs = [node for node in graph.node if read_by_decode.intersection(node.output) and node.op_type == "Conv"]
    assert len(outputs) == 3 and all(node.input[1] in floats for node in outputs)  # heatmap, wh, offset: float
    for node in graph.node:
        if node.op_type == "DeformConv":  # no integer kernel: float weights
            assert node.input[1] in floats
    assert ("DeformConv" in ops) == (name in WITH_DCN)
    metadata = {p.key: p.value for p in proto.metadata_props}
    assert metadata["model"] == name and metadata["quantization"] == "int8"
    assert metadata["calibration_images"] == "2"
    for result in OnnxDetector(path, threads=1).detect_images(photos()):  # it runs as the float file does
        assert 0 < len(result["scores"]) <= 100 and torch.isfinite(result["boxes"]).all()


def agreement(reference, results, score_threshold):
    """The fraction of the reference's detections above ``score_threshold`` that a detection of
    ``results`` matches (same class, IoU >= 0.9, each used once), and the score differences of
    the matched pairs."""
    matched, total, differences = 0, 0, []
    for expected, got in zip(reference, results):
        keep = expected["scores"] > score_threshold
        overlaps = box_iou(expected["boxes"][keep], got["boxes"])  # [N, M]
        used = torch.zeros(len(got["scores"]), dtype=torch.bool)
        for row, label, score in zip(overlaps, expected["labels"][keep], expected["scores"][keep]):
            total += 1
            candidates = torch.where(~used & (got["labels"] == label) & (row >= 0.9), row, -1.0)
            if candidates.max() >= 0.9:
                best = int(candidates.argmax())
                used[best] = True
                matched += 1
                differences.append(abs(float(got["scores"][best] - score)))
    return matched / total, total, np.array(differences)


@pytest.fixture(scope="module")
def fitted(data_dir):
    """The tiny model fitted to the 8 training images of ``data_dir`` at 64x64 (100 full-batch Adam
    steps, ~6 s): confident peaks on those images (top scores 0.87-0.95, 29 detections above 0.3),
    as a trained model has on its data. (lively() weights do not do here: a random network
    amplifies 8-bit rounding layer after layer, and even a correct INT8 graph disagrees.)"""
    torch.manual_seed(0)
    split = CocoDetection(data_dir / "train/images", data_dir / "train/annotations.json",
                          EvalTransform(input_size=(64, 64), keep_res=False), with_targets=True)
    batch = collate([split[i] for i in range(len(split))])
    model = create_model(MODEL, num_classes=len(split.class_names), head_planes=32).train()
    optimizer, loss = torch.optim.Adam(model.parameters(), 3e-3), CenterNetLoss()
    for _ in range(100):
        optimizer.zero_grad()
        loss(model(batch["image"]), batch)["loss"].backward()
        optimizer.step()
    return model.eval(), split.class_names


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_int8_detections_agree_with_float(fitted, data_dir, tmp_path):
    """Measured with the default calibration (percentile): 28 of the 29 float detections above 0.3
    matched (same class, IoU >= 0.9), and 28 of the 29 INT8 ones the other way; score differences
    max 0.026, mean 0.008 (minmax: 29/29, 0.045, 0.011; entropy: 26/29, 0.040, 0.013). The bounds
    leave 4 of 29 unmatched and three times the score differences. Broken quantizations fail
    them: calibrated on black images, none is matched."""
    model, class_names = fitted
    fp32 = export_onnx(model, tmp_path / "fp32.onnx", input_size=(64, 64), class_names=class_names)
    folder = data_dir / "train/images"
    # the thresholds below were measured with percentile calibration on this fitted model
    int8 = quantize_onnx(fp32, tmp_path / "int8.onnx", folder, calibration_count=8, calibration_method="percentile")
    images = [load_image(file) for file in list_images(folder)]
    reference = OnnxDetector(fp32, threads=1).detect_images(images)
    results = OnnxDetector(int8, threads=1).detect_images(images)
    matched, total, differences = agreement(reference, results, 0.3)
    assert total >= 20, total  # the fitted model finds its objects
    assert matched >= 0.85, (matched, total)
    assert differences.max() <= 0.08 and differences.mean() <= 0.025, differences
    matched_back, total_back, _ = agreement(results, reference, 0.3)  # and no extra detections
    assert matched_back >= 0.85, (matched_back, total_back)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cli_int8_export_then_predict_and_eval_with_onnx_backend(fitted, data_dir, calibration, tmp_path, capsys):
    model, class_names = fitted
    config = tiny_config(data_dir)  # the run it could have come from: 64x64, resized
    config.model.num_classes, config.model.head_planes = len(class_names), 32
    checkpoint = tmp_path / "best.pt"
    save_checkpoint({"model": model.state_dict(), "class_names": class_names, "config": config.to_dict()}, checkpoint)
    out = tmp_path / "model_int8.onnx"
    assert main(["export", "--weights", str(checkpoint), "--quantize", "int8", "--calibration", str(calibration),
                 "--calibration-count", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "INT8" in printed and "3 image(s)" in printed
    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert metadata["calibration_images"] == "3" and json.loads(metadata["class_names"]) == class_names
    predictions = tmp_path / "predictions"
    assert main(["predict", str(data_dir / "val/images"), "--weights", str(out), "--backend", "onnx",
                 "--out", str(predictions)]) == 0
    assert len(json.loads((predictions / "predictions.json").read_text())) == 4
    evaluation = tmp_path / "eval"
    assert main(["eval", "--weights", str(out), "--backend", "onnx", "--data", str(data_dir),
                 "--out", str(evaluation)]) == 0
    assert 0 <= json.loads((evaluation / "eval.json").read_text())["AP"] <= 1


def fails(argv, capsys, *words):
    """The command exits non-zero with one error line on stderr that holds each of ``words``."""
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    assert code not in (0, None), argv
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    for word in words:
        assert str(word) in errors[0], (word, errors[0])


def test_bad_calibration_gets_one_clear_error_and_writes_nothing(tmp_path, capsys):
    empty, unreadable, not_images = tmp_path / "empty", tmp_path / "unreadable", tmp_path / "notes"
    for folder in (empty, unreadable, not_images):
        folder.mkdir()
    (unreadable / "a.jpg").write_bytes(b"not a jpeg")
    (unreadable / "b.png").write_bytes(b"")
    (not_images / "readme.txt").write_text("no images here")
    out = tmp_path / "m.onnx"
    export = ["export", "--model", MODEL, "--num-classes", "2", "--input-size", "64", "--out", str(out)]
    fails([*export, "--quantize", "int8"], capsys, "--quantize int8 needs --calibration")
    fails([*export, "--quantize", "int8", "--calibration", str(empty)], capsys, "--calibration", "empty", "no image files")
    fails([*export, "--quantize", "int8", "--calibration", str(not_images)], capsys, "--calibration", "no image files")
    fails([*export, "--quantize", "int8", "--calibration", str(unreadable)], capsys,
          "--calibration", "none of its 2 image file(s) could be read", "a.jpg")
    fails([*export, "--quantize", "int8", "--calibration", str(tmp_path / "missing")], capsys,
          "--calibration", "missing", "no such file or folder")
    fails([*export, "--quantize", "int8", "--calibration", str(empty), "--calibration-count", "0"], capsys,
          "--calibration-count", "must be at least 1")
    fails([*export, "--calibration", str(empty)], capsys, "--calibration", "add --quantize int8")
    assert sorted(tmp_path.iterdir()) == sorted([empty, unreadable, not_images])  # no .onnx, whole or half


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_unreadable_files_among_good_ones_are_passed_over_with_a_warning(calibration, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for file in sorted(calibration.iterdir())[:2]:
        (folder / file.name).write_bytes(file.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    model = lively_model(MODEL, size=(64, 64))
    fp32 = export_onnx(model, tmp_path / "fp32.onnx", input_size=(64, 64))
    with pytest.warns(UserWarning, match="1 of 3 image file.s. unreadable, calibrating on the other 2"):
        path = quantize_onnx(fp32, tmp_path / "int8.onnx", folder)
    assert {p.key: p.value for p in onnx.load(str(path)).metadata_props}["calibration_images"] == "2"
