"""ImageNet backbone weights in PaddleDetection's layout: strict suffix matching into ``model.backbone``."""

import re

import numpy as np
import pytest
import torch
from torch import nn

from centernet import create_model
from centernet.cli import main
from centernet.data.synthetic import generate_dataset
from centernet.engine.checkpoint import load_checkpoint
from centernet.weights import WeightsMismatchError, load_backbone_weights
from centernet.weights.backbone import match_keys
from conftest import CLASSIFIERS, DETECTOR_ONLY, ZOO, imagenet_backbone, imagenet_file, write_pdparams

def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_equal_states(actual, expected):
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


@pytest.mark.parametrize("prefix", ["", "backbone."])
@pytest.mark.parametrize("name", ZOO)
def test_imagenet_backbone_loads_into_each_zoo_model(name, prefix, tmp_path):
    path = tmp_path / f"{name}_imagenet.pdparams"
    state = imagenet_file(path, name, prefix)
    model = create_model(name)
    before = snapshot(model)
    report = load_backbone_weights(model, path)

    backbone = model.backbone.state_dict()
    assert_equal_states(backbone, {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")})
    kept = [k for k in backbone if DETECTOR_ONLY.search(k)]  # r50's DCN offsets: still their zero start
    assert report.kept == kept and len(kept) == (6 if name == "centernet_r50" else 0)
    assert_equal_states(backbone, {k: before[f"backbone.{k}"] for k in kept})
    assert_equal_states(model.state_dict(), {k: v for k, v in before.items() if not k.startswith("backbone.")})

    assert report.source == "paddle"
    assert report.loaded == sum(not k.endswith("num_batches_tracked") for k in state)
    assert len(report.dropped) == len(CLASSIFIERS[name]) and all(k.startswith(prefix) for k in report.dropped)
    line = str(report)
    assert "\n" not in line and f"dropped {len(CLASSIFIERS[name])} entries with no place in the backbone" in line


def test_another_backbone_fails_listing_keys_and_loads_nothing(tmp_path):
    path = tmp_path / "DLA34_pretrain.pdparams"
    imagenet_file(path, "centernet_dla34")
    model = create_model("centernet_r50")
    before = snapshot(model)
    with pytest.raises(WeightsMismatchError) as caught:
        load_backbone_weights(model, path)
    message = str(caught.value)
    assert message.startswith(f"{path}: does not fit the ResNet backbone (paddle format), nothing loaded: ")
    assert re.search(r"\d+ missing: conv1\.conv1_1\.conv\.weight, conv1\.conv1_1\.norm\.weight, ", message)
    assert_equal_states(model.state_dict(), before)


def test_another_width_fails_on_shapes(tmp_path):
    path = tmp_path / "MobileNetV3_small_x1_0_ssld_pretrained.pdparams"
    imagenet_file(path, "centernet_mbv3_small")
    with pytest.raises(WeightsMismatchError) as caught:
        load_backbone_weights(create_model("centernet_mbv3_large"), path)
    message = str(caught.value)
    assert "missing: conv13.expand_conv.conv.weight" in message
    assert "shape mismatch: conv3.expand_conv.conv.weight: file [72, 16, 1, 1] vs model [64, 16, 1, 1]" in message


def paddle_match(model_keys, file_keys):
    """ppdet/utils/checkpoint.py match_state_dict's choice, written out as it is: for each model key the
    longest file key b with a == b or a.endswith('.' + b)."""
    chosen = {}
    for a in model_keys:
        candidates = [b for b in file_keys if a == b or a.endswith("." + b)]
        if candidates:
            chosen[a] = max(candidates, key=len)
    return chosen


@pytest.mark.parametrize("name", ZOO)
def test_match_keys_is_paddles_rule(name):
    arrays, _ = imagenet_backbone(name)
    model_keys = [f"backbone.{k}" for k in create_model(name).backbone.state_dict()]
    # the file's own keys, prefixed, and shorter tails of them that compete with the full ones
    file_keys = list(arrays) + [f"backbone.{k}" for k in list(arrays)[::7]] + \
        [k.split(".", 1)[-1] for k in list(arrays)[::5]] + ["weight", "conv.weight", "a.norm.weight"]
    assert match_keys(model_keys, file_keys) == paddle_match(model_keys, file_keys)
    assert match_keys(["backbone.res2.res2a.branch2a.conv.weight"],
                      ["res2.res2a.branch2a.conv.weight", "branch2a.conv.weight", "2a.conv.weight"]) == \
        {"backbone.res2.res2a.branch2a.conv.weight": "res2.res2a.branch2a.conv.weight"}


def test_a_file_key_filling_two_places_is_an_error(tmp_path):
    model = nn.Module()
    model.backbone = nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), nn.Conv2d(4, 4, 1, bias=False))
    path = tmp_path / "short.pdparams"
    write_pdparams(path, {"weight": np.ones((4, 4, 1, 1), np.float32)})
    with pytest.raises(WeightsMismatchError, match=r"1 matching several keys: weight"):
        load_backbone_weights(model, path)


def test_create_model_with_pretrained_backbone(tmp_path):
    path = tmp_path / "MobileNetV1_pretrained.pdparams"
    state = imagenet_file(path, "centernet_mbv1")
    model = create_model("centernet_mbv1", num_classes=3, pretrained_backbone=path)
    assert_equal_states(model.backbone.state_dict(), {k: v for k, v in state.items()
                                                      if not k.endswith("num_batches_tracked")})
    with pytest.raises(ValueError, match="give one of them"):
        create_model("centernet_mbv1", weights=path, pretrained_backbone=path)


def test_train_from_imagenet_backbone(tmp_path, capsys):
    name = "centernet_mbv3_small"
    path = tmp_path / "MobileNetV3_small_x1_0_ssld_pretrained.pdparams"
    imagenet_file(path, name)
    paths = generate_dataset(tmp_path / "data", num_train=2, num_val=0, seed=0, min_side=64, max_side=96,
                             max_objects=2)
    args = ["train", "--model", name, "--train-images", str(paths["train_images"]),
            "--train-ann", str(paths["train_ann"]), "--input-size", "64", "--epochs", "1", "--batch-size", "2",
            "--workers", "0", "--no-check-data", "--device", "cpu", "--quiet", "--run-dir", str(tmp_path / "run")]
    assert main(args + ["--pretrained-backbone", str(path)]) == 0
    printed = capsys.readouterr().out
    assert f"{path}: loaded 206 backbone tensors (paddle format); dropped 8 entries" in printed
    config = load_checkpoint(tmp_path / "run" / "last.pt")["config"]
    assert config["model"]["pretrained_backbone"] == str(path)

    assert main(args + ["--pretrained", str(path), "--pretrained-backbone", str(path)]) == 2
    assert "give one" in capsys.readouterr().err
