"""Our zoo models against PaddleDetection's, built by paddledet 2.6.0 itself.

For each zoo row, ``benchmarks/paddle_reference.py`` (run by the reference venv's Python, a separate
process: paddle and torch never share one) builds Paddle's model with random but non-trivial
weights (random BN statistics and affine, offset convs that really deform, noisy biases and
up-sampling kernels), saves them as ``.pdparams`` and runs fixed inputs in float32 and float64.
Here the same file goes through ``centernet.load_weights`` into our model and the maps are compared:

- float64: every map within 1e-4 (measured: ~3e-7), and our decode gives the same top-100 as
  ppdet's ``CenterNetPostProcess`` (labels equal, boxes within 1e-3 px);
- float32: the deployment precision. Float32 rounding alone moves these deep random nets by ~1e-3
  (Paddle's own float32 run against its float64 run), so ours must be as close to Paddle's float32
  maps as that rounding allows: within 4x Paddle's own float32 error plus 1e-4.

Run with ``pytest -m paddle tests/paddle``; skipped when ``.venv-paddle`` is absent
(``scripts/setup_paddle_env.sh`` makes it).
"""

import numpy as np
import pytest
import torch
from reference_env import MODELS, run_reference

import centernet
from centernet import create_model, list_models
from centernet.decode import decode

pytestmark = pytest.mark.paddle

SIZES = ["2x256x256", "1x192x320"]  # a batch, and a non-square input
MAPS = [("heatmap", "heatmap"), ("wh", "size"), ("offset", "offset")]  # ours, Paddle's


@pytest.fixture(scope="module", params=MODELS)
def reference(request, tmp_path_factory):
    """(our model with the Paddle weights loaded, the reference arrays) for one zoo row."""
    name = request.param
    out = tmp_path_factory.mktemp(name)
    run_reference("reference", name, "--out", out, "--sizes", *SIZES)
    model = create_model(name).eval()
    report = centernet.load_weights(model, out / f"{name}.pdparams")
    assert report.source == "paddle" and not report.problems()
    return model, dict(np.load(out / f"{name}.npz"))


def test_every_zoo_model_is_compared():
    assert sorted(MODELS) == list_models()


def _run(model, images, dtype):
    model = model.to(dtype)
    with torch.no_grad():
        outputs = model(torch.from_numpy(images).to(dtype))
    model.float()
    return {key: value.double().numpy() for key, value in outputs.items()}


@pytest.mark.parametrize("index", range(len(SIZES)))
def test_maps_equal_in_float64(reference, index):
    model, arrays = reference
    ours = _run(model, arrays[f"image_{index}"], torch.float64)
    for key, paddle_key in MAPS:
        expected = arrays[f"{paddle_key}64_{index}"]
        assert ours[key].shape == expected.shape, key
        assert np.abs(ours[key] - expected).max() <= 1e-4, key


@pytest.mark.parametrize("index", range(len(SIZES)))
def test_maps_close_in_float32(reference, index):
    model, arrays = reference
    ours = _run(model, arrays[f"image_{index}"], torch.float32)
    for key, paddle_key in MAPS:
        expected = arrays[f"{paddle_key}_{index}"]
        rounding = np.abs(expected - arrays[f"{paddle_key}64_{index}"]).max()
        assert np.abs(ours[key] - expected).max() <= 4 * rounding + 1e-4, key


@pytest.mark.parametrize("index", range(len(SIZES)))
def test_decoded_top100_equal(reference, index):
    model, arrays = reference
    ours = _run(model, arrays[f"image_{index}"], torch.float64)
    boxes, scores, labels = decode(*(torch.from_numpy(ours[key]) for key in ("heatmap", "wh", "offset")),
                                   k=100)
    boxes = boxes * model.stride  # output-map -> input pixels
    expected = arrays[f"detections_{index}"]  # [B, 100, (class, score, x1, y1, x2, y2)]
    np.testing.assert_array_equal(labels.numpy(), expected[..., 0].astype(np.int64))
    np.testing.assert_allclose(scores.numpy(), expected[..., 1], atol=1e-6)
    np.testing.assert_allclose(boxes.numpy(), expected[..., 2:], atol=1e-3)
