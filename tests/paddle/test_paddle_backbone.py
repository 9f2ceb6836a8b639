"""ImageNet backbone weights: our strict loader against PaddleDetection's own, on paddledet 2.6.0's backbones.

For each zoo row, ``benchmarks/paddle_reference.py backbone`` (run by the reference venv's Python)
gives a Paddle backbone non-trivial random weights and saves its state dict the way the pretrained
files hold it (no ``backbone.`` prefix, no DCN offset convs, plus classifier layers); ppdet's
``load_pretrain_weight`` loads that file into a fresh Paddle model. Here the same file goes through
``load_backbone_weights`` into our model, and:

- we set exactly the tensors Paddle's loader set (nothing in Paddle's neck or head, all of its backbone
  but the DCN offsets), and drop exactly the classifier entries;
- our backbone's features equal Paddle's in float64 within 1e-4.

Run with ``pytest -m paddle tests/paddle``; skipped without the reference venv (see reference_env.py).
"""

import re

import numpy as np
import pytest
import torch
from reference_env import MODELS, run_reference

from centernet import create_model
from centernet.weights import load_backbone_weights

pytestmark = pytest.mark.paddle


def paddle_name(key):
    """Our state-dict key as Paddle names it (BatchNorm statistics)."""
    return re.sub(r"running_mean$", "_mean", re.sub(r"running_var$", "_variance", key))


@pytest.fixture(scope="module", params=MODELS)
def reference(request, tmp_path_factory):
    """(model name, the ImageNet-style file, Paddle's arrays) for one zoo row."""
    name = request.param
    out = tmp_path_factory.mktemp(name)
    run_reference("backbone", name, "--out", out, "--size", "2x128x160")
    return name, out / f"{name}_imagenet.pdparams", dict(np.load(out / f"{name}_backbone.npz"))


def test_we_load_what_paddle_loads(reference):
    name, path, arrays = reference
    model = create_model(name)
    report = load_backbone_weights(model, path)
    ours = {f"backbone.{paddle_name(k)}" for k in model.backbone.state_dict()
            if not k.endswith("num_batches_tracked") and k not in report.kept}
    assert ours == set(arrays["loaded"].tolist())
    assert report.loaded == len(ours)
    assert all(re.search(r"(^|\.)(fc|out|_fc|last_conv|_last_conv|last_second_conv)\.", k) for k in report.dropped)


def test_backbone_features_equal_paddles(reference):
    name, path, arrays = reference
    model = create_model(name).eval()
    load_backbone_weights(model, path)
    model.double()
    with torch.no_grad():
        features = model.backbone(torch.from_numpy(arrays["image"]).double())
    expected = [arrays[f"feature_{i}"] for i in range(len(features))]
    assert f"feature_{len(features)}" not in arrays
    for i, (ours, theirs) in enumerate(zip(features, expected)):
        assert ours.shape == theirs.shape, i
        assert np.abs(ours.numpy() - theirs).max() <= 1e-4, i
