"""The fastest exact inference path (centernet.models.fuse) gives the eager model's maps.

Zoo models get spread-out weights (random BatchNorm statistics, scales and shifts, deformable
offsets of about a pixel) from test_export.lively, so a BatchNorm folded into the wrong conv, a
lost bias or an activation that overwrites a tensor still in use shows in the maps.
"""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from centernet.engine.predict import Detector
from centernet.allocator import keep_freed_memory
from centernet.models.fuse import ChannelShift, activations_in_place, fold_batch_norms, optimize_for_inference
from conftest import ZOO, lively_model, photos, smooth_images


def assert_maps_close(got, expected, tolerance=1e-4):
    """Each map within ``tolerance`` of the reference, relative to the map's largest value."""
    assert set(got) == set(expected)
    for key in expected:
        assert got[key].dtype == expected[key].dtype and got[key].shape == expected[key].shape
        scale = max(1.0, expected[key].abs().max().item())
        assert (got[key] - expected[key]).abs().max().item() <= tolerance * scale, key


@pytest.fixture(scope="module")
def images():
    return smooth_images(2, 96, 96)  # the images lively_model fits its statistics to


@pytest.mark.parametrize("name", ZOO)
def test_fast_path_equals_eager_on_every_zoo_model(name, images):
    model = lively_model(name)
    state = copy.deepcopy(model.state_dict())
    fast = optimize_for_inference(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())  # every one folded
    with torch.inference_mode():
        expected = model(images)
        got = fast(images)
    assert_maps_close(got, expected)
    # the model itself is untouched
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_resnet_deformable_layer_keeps_its_shift_outside_the_kernel(images):
    """ResNet's DCN stage applies its kernel without a bias: the folded shift stays a module."""
    model = lively_model("centernet_r50")
    fast = copy.deepcopy(model)
    folded = fold_batch_norms(fast)
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert folded == norms
    shifts = [m for m in fast.modules() if isinstance(m, ChannelShift)]
    assert len(shifts) == 3  # the 3x3 DCN of each of stage 5's three blocks
    with torch.inference_mode():
        assert_maps_close(fast(images), model(images))


def test_in_place_activations_do_not_overwrite_tensors_in_use(images):
    """DLA-34 (residuals, aggregation nodes, DCN neck) and ShuffleNetV2 (channel split and
    shuffle): outputs unchanged with every switchable activation in place."""
    for name in ("centernet_dla34", "centernet_shufflenetv2"):
        model = lively_model(name)
        fast = copy.deepcopy(model)
        assert activations_in_place(fast) > 0
        with torch.inference_mode():
            assert_maps_close(fast(images), model(images), tolerance=1e-6)


def test_precision_option_returns_maps_in_the_input_dtype(images):
    """``dtype`` runs the model in another precision (float16 / bfloat16 on a GPU); float64
    exercises the same path on CPU and must come close to the float32 model."""
    model = lively_model("centernet_mbv3_small")
    fast = optimize_for_inference(model, dtype=torch.float64)
    with torch.inference_mode():
        got = fast(images)
        expected = model(images)
    assert got["heatmap"].dtype == torch.float32
    assert_maps_close(got, expected, tolerance=1e-4)
    plain = optimize_for_inference(model, channels_last=False)
    assert not isinstance(plain, type(fast))  # nothing to convert: the folded model itself
    with torch.inference_mode():
        assert_maps_close(plain(images), expected)


def test_detector_on_the_fast_path_gives_the_same_detections(images):
    model = lively_model("centernet_mbv3_small")
    keep_freed_memory()
    slow = Detector(model, input_size=(128, 128), keep_res=False, device="cpu")
    fast = Detector(optimize_for_inference(model), input_size=(128, 128), keep_res=False, device="cpu")
    for got, expected in zip(fast.detect_images(photos()), slow.detect_images(photos())):
        np.testing.assert_array_equal(got["labels"].numpy(), expected["labels"].numpy())
        np.testing.assert_allclose(got["scores"].numpy(), expected["scores"].numpy(), atol=1e-5)
        np.testing.assert_allclose(got["boxes"].numpy(), expected["boxes"].numpy(), atol=0.05)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cli_benchmark_prints_every_backend_and_batch(capsys):
    from centernet.cli import main

    assert main(["benchmark", "--model", "centernet_mbv3_small", "--input-size", "64",
                 "--batch-sizes", "1", "2", "--repeat", "1", "--threads", "1", "--no-pipeline"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    backends = ("eager", "fastest", "onnxruntime", "onnxruntime-int8")  # the default: all of them on a CPU
    timed = {(row[0], row[1]) for row in rows if row and row[0] in backends}
    assert timed == {(b, n) for b in backends for n in ("1", "2")}


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_int8_backend_times_the_quantized_graph(tmp_path):
    """What `centernet benchmark` times as onnxruntime-int8 is the file of export --quantize int8
    (its metadata says so and it holds integer weights), not the float graph again."""
    import onnx

    from centernet import create_model
    from centernet.engine.benchmark import _onnx_session

    torch.manual_seed(0)
    model = create_model("centernet_mbv3_small", num_classes=3).eval()
    session = _onnx_session(model, (64, 64), 1, torch.device("cpu"), str(tmp_path), int8=True)
    assert session.get_modelmeta().custom_metadata_map["quantization"] == "int8"
    graph = onnx.load(str(tmp_path / "model_int8.onnx")).graph
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer)
    boxes, scores, labels = session.run(None, {"images": np.zeros((2, 3, 64, 64), np.float32)})
    assert boxes.shape == (2, 100, 4) and scores.shape == labels.shape == (2, 100)


@pytest.mark.slow
def test_pipeline_and_training_step_are_measured():
    from centernet.engine.benchmark import measure_pipeline

    pipeline, step = measure_pipeline("centernet_mbv3_small", (128, 128), workers=1, batch_size=2,
                                      num_images=6, train_steps=1)
    assert pipeline.what.startswith("pipeline") and step.what == "train step"
    assert pipeline.images_per_s > 0 and step.images_per_s > 0 and step.batch == 2
