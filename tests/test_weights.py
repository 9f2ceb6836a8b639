"""Weight loading: Paddle .pdparams, original CenterNet .pth, our checkpoints; safely."""

import re

import numpy as np
import pytest
import torch
from torch import nn

import centernet
from centernet import create_model
from centernet.weights import (UnsafeWeightsError, WeightsFormatError, WeightsMismatchError,
                               load_weights, read_pdparams, read_weights)
from conftest import Tiny, assert_same_weights, malicious_files, randomized, to_paddle, write_pdparams


# --- Paddle format ---------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("as_tuples", [False, True])
def test_pdparams_round_trip(tmp_path, protocol, as_tuples):
    source = randomized(Tiny())
    path = tmp_path / "tiny.pdparams"
    write_pdparams(path, to_paddle(source.state_dict()), protocol, as_tuples)
    model = Tiny()
    report = load_weights(model, path)
    assert report.source == "paddle" and report.loaded == len(to_paddle(source.state_dict()))
    assert_same_weights(model, source.state_dict())


def test_read_pdparams_drops_the_name_table(tmp_path):
    path = tmp_path / "w.pdparams"
    write_pdparams(path, {"a._mean": np.arange(3, dtype=np.float32)})
    arrays = read_pdparams(path)
    assert list(arrays) == ["a._mean"] and arrays["a._mean"].tolist() == [0, 1, 2]


def test_zoo_model_round_trip_through_paddle_names(tmp_path):
    source = randomized(create_model("centernet_dla34"))
    path = tmp_path / "dla34.pdparams"
    write_pdparams(path, to_paddle(source.state_dict()))
    model = create_model("centernet_dla34")
    report = centernet.load_weights(model, path)
    assert not report.problems()
    assert_same_weights(model, source.state_dict())


# --- safety ----------------------------------------------------------------------------------

@pytest.mark.parametrize("loader", ["read_pdparams", "read_weights", "load_weights",
                                    "centernet.load_weights"])
def test_malicious_files_are_refused_without_running_code(tmp_path, loader):
    marker = tmp_path / "pwned"
    load = {"read_pdparams": read_pdparams, "read_weights": read_weights,
            "load_weights": lambda p: load_weights(Tiny(), p),
            "centernet.load_weights": lambda p: centernet.load_weights(Tiny(), p)}[loader]
    for path in malicious_files(tmp_path, marker):
        if loader == "read_pdparams" and path.name in ("evil_zip.pth", "evil_legacy.pth"):
            continue  # torch's own containers are not .pdparams
        with pytest.raises(UnsafeWeightsError, match=re.escape(str(path))) as caught:
            load(path)
        assert "open" in str(caught.value)
        assert not marker.exists(), f"{path}: code in the file ran"


def test_truncated_files_name_the_file(tmp_path):
    pdparams, pth = tmp_path / "cut.pdparams", tmp_path / "cut.pth"
    write_pdparams(pdparams, to_paddle(randomized(Tiny()).state_dict()))
    torch.save({"model": Tiny().state_dict()}, pth)
    for path in (pdparams, pth):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.raises(WeightsFormatError, match=re.escape(str(path))):
            load_weights(Tiny(), path)


def test_not_a_weights_file(tmp_path):
    text = tmp_path / "notes.pdparams"
    text.write_text("hello")
    with pytest.raises(WeightsFormatError, match=re.escape(str(text))):
        load_weights(Tiny(), text)
    with pytest.raises(FileNotFoundError, match="missing.pdparams"):
        load_weights(Tiny(), tmp_path / "missing.pdparams")


# --- mismatches ------------------------------------------------------------------------------

def test_weights_of_another_model_fail_loudly_and_load_nothing(tmp_path):
    path = tmp_path / "wide.pdparams"
    write_pdparams(path, to_paddle(randomized(Tiny(width=8)).state_dict()))
    model = Tiny(width=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsMismatchError) as caught:
        load_weights(model, path)
    message = str(caught.value)
    assert str(path) in message and "conv.weight: file [8, 3, 3, 3] vs model [4, 3, 3, 3]" in message
    assert_same_weights(model, before)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    arrays = to_paddle(randomized(Tiny()).state_dict())
    arrays["extra.weight"] = arrays.pop("cls.bias")
    path = tmp_path / "renamed.pdparams"
    write_pdparams(path, arrays)
    with pytest.raises(WeightsMismatchError, match=r"1 missing: cls\.bias; 1 unexpected: extra\.weight"):
        load_weights(Tiny(), path)


def test_non_strict_loads_what_fits_and_reports_the_rest(tmp_path):
    """Fine-tuning on another class count: all but the mis-shaped classifier loads; a file with
    nothing that fits is still an error."""
    source = randomized(Tiny(classes=7))
    path = tmp_path / "seven.pdparams"
    write_pdparams(path, to_paddle(source.state_dict()))
    model = Tiny()
    report = load_weights(model, path, strict=False)
    assert report.mismatched == ["cls.weight: file [7, 4, 1, 1] vs model [5, 4, 1, 1]",
                                 "cls.bias: file [7] vs model [5]"]
    torch.testing.assert_close(model.conv.weight, source.conv.weight)
    with pytest.raises(WeightsMismatchError, match="nothing loaded: 2 missing: weight, bias"):
        load_weights(nn.Linear(2, 2), path, strict=False)


# --- original CenterNet and our checkpoints ---------------------------------------------------

def original_name(key):
    """Our DLA-34 key as xingyizhou/CenterNet's pose_dla_dcn.DLASeg names it (written out
    independently of centernet.weights.mapping, from the original module structure)."""
    head = re.match(r"head\.(heatmap|size|offset)\.(\d)\.conv\.(.+)", key)
    if head:
        return f"{dict(heatmap='hm', size='wh', offset='reg')[head[1]]}.{head[2]}.{head[3]}"
    if key.startswith("neck."):
        key = key[len("neck."):]
        key = key.replace(".0.conv.conv_offset.", ".conv.conv_offset_mask.")
        key = key.replace(".0.conv.conv_dcn.", ".conv.").replace(".0.norm.", ".actf.0.")
        return key
    key = "base." + key[len("backbone."):]
    stem = re.match(r"base\.(base_layer|level0|level1)\.0\.(conv|norm)\.(.+)", key)
    if stem:
        return f"base.{stem[1]}.{0 if stem[2] == 'conv' else 1}.{stem[3]}"
    key = re.sub(r"\.conv(\d)\.conv\.", r".conv\1.", key)
    key = re.sub(r"\.conv(\d)\.norm\.", r".bn\1.", key)
    key = key.replace(".root.conv.conv.", ".root.conv.").replace(".root.conv.norm.", ".root.bn.")
    return key.replace(".project.conv.", ".project.0.").replace(".project.norm.", ".project.1.")


def test_original_centernet_checkpoint_loads(tmp_path):
    source = randomized(create_model("centernet_dla34"))
    state = {"module." + original_name(k): v for k, v in source.state_dict().items()}
    # the documented names of the released ctdet_coco_dla_2x.pth
    assert list(state["module.dla_up.ida_0.proj_1.conv.conv_offset_mask.weight"].shape) == [27, 512, 3, 3]
    for name in ("hm.0.weight", "hm.2.bias", "wh.2.weight", "reg.0.bias", "base.level5.root.bn.running_var"):
        assert "module." + name in state
    state["module.base.fc.weight"] = torch.zeros(1000, 512, 1, 1)  # ImageNet classifier, dropped
    state["module.base.fc.bias"] = torch.zeros(1000)
    # ~20.2M parameters as the original MODEL_ZOO says (classifier included, BN stats excluded)
    learned = sum(v.numel() for k, v in state.items() if not re.search(r"running|num_batches", k))
    assert 20.1e6 < learned < 20.3e6
    path = tmp_path / "ctdet_coco_dla_2x.pth"
    torch.save({"epoch": 230, "state_dict": state}, path)
    model = create_model("centernet_dla34")
    report = load_weights(model, path)
    assert report.source == "original" and not report.problems()
    assert_same_weights(model, source.state_dict())


def test_our_checkpoint_prefers_ema(tmp_path):
    model_weights, ema_weights = randomized(Tiny(), 1).state_dict(), randomized(Tiny(), 2).state_dict()
    path = tmp_path / "last.pt"
    torch.save({"model": model_weights, "ema": ema_weights, "epoch": 3}, path)
    model = Tiny()
    assert load_weights(model, path).source == "centernet"
    assert_same_weights(model, ema_weights)
    torch.save({"model": model_weights, "ema": None}, path)
    load_weights(model, path)
    assert_same_weights(model, model_weights)
