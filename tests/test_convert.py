"""`centernet convert`: any weights file we read, written as safetensors that load without pickle."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from centernet import create_model
from centernet.cli import main
from centernet.weights import (UnsafeWeightsError, WeightsFormatError, WeightsMismatchError, convert_weights,
                               load_weights)
from conftest import assert_same_weights, malicious_files, to_paddle, write_pdparams

MODEL = "centernet_mbv3_small"


@pytest.fixture(scope="module")
def paddle_file(tmp_path_factory):
    """A zoo model's weights in PaddleDetection's names and layout, and the model they came from."""
    torch.manual_seed(0)
    source = perturbed(create_model(MODEL)).eval()
    path = tmp_path_factory.mktemp("paddle") / f"{MODEL}.pdparams"
    write_pdparams(path, to_paddle(source.state_dict()))
    return path, source


def perturbed(model):
    """Every weight and statistic moved off its initial value, the outputs still finite."""
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                value.add_(0.05 * torch.randn_like(value))
                if key.endswith("running_var"):
                    value.abs_()
    return model


def header(path):
    """The JSON header of a safetensors file, read by hand (8-byte length, then JSON)."""
    raw = path.read_bytes()
    return json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])


def test_pdparams_to_safetensors_round_trip(paddle_file, tmp_path):
    pdparams, source = paddle_file
    out = tmp_path / "mbv3_small.safetensors"
    converted = convert_weights(pdparams, out, model=MODEL)
    assert converted.source == "paddle" and converted.tensors == len(to_paddle(source.state_dict()))
    assert header(out)["__metadata__"] == {"format": "centernet", "source": "paddle", "source_file": pdparams.name,
                                           "model": MODEL, "num_classes": "80"}
    assert out.read_bytes()[:1] != b"\x80" and [p.name for p in tmp_path.iterdir()] == [out.name]

    from_paddle, from_safetensors = create_model(MODEL).eval(), create_model(MODEL).eval()
    load_weights(from_paddle, pdparams)
    report = load_weights(from_safetensors, out)
    assert report.source == "safetensors" and not report.problems()
    assert_same_weights(from_safetensors, from_paddle.state_dict())
    assert_same_weights(from_safetensors, source.state_dict())
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected, outputs = from_paddle(images), from_safetensors(images)
    for key, value in expected.items():
        assert torch.isfinite(value).all() and torch.equal(outputs[key], value), key


def test_safetensors_are_told_by_content_not_name(paddle_file, tmp_path):
    pdparams, source = paddle_file
    out = tmp_path / "w.safetensors"
    convert_weights(pdparams, out)  # no model: the keys are mapped, nothing to transpose in a zoo model
    renamed = out.rename(tmp_path / "weights.pdparams")
    model = create_model(MODEL)
    assert load_weights(model, renamed).source == "safetensors"
    assert_same_weights(model, source.state_dict())


def test_malicious_pickles_are_refused_and_nothing_is_written(tmp_path):
    marker = tmp_path / "pwned"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for path in malicious_files(tmp_path, marker):
        out = out_dir / f"{path.stem}.safetensors"
        with pytest.raises(UnsafeWeightsError, match=re.escape(str(path))):
            convert_weights(path, out)
        assert not marker.exists(), f"{path}: code in the file ran"
    assert list(out_dir.iterdir()) == []


def test_weights_of_another_model_fail_naming_keys_and_write_nothing(paddle_file, tmp_path):
    pdparams, _ = paddle_file
    out = tmp_path / "large.safetensors"
    out.write_bytes(b"the previous file")
    with pytest.raises(WeightsMismatchError) as caught:
        convert_weights(pdparams, out, model="centernet_mbv3_large")
    message = str(caught.value)
    assert message.startswith(f"{pdparams}: does not fit CenterNet (paddle format), nothing loaded: "
                              f"120 missing: backbone.conv13.expand_conv.conv.weight, ")
    assert "backbone.conv3.expand_conv.conv.weight: file [72, 16, 1, 1] vs model [64, 16, 1, 1]" in message
    assert out.read_bytes() == b"the previous file" and [p.name for p in tmp_path.iterdir()] == [out.name]


def test_damaged_safetensors_name_the_file(paddle_file, tmp_path):
    out = tmp_path / "cut.safetensors"
    convert_weights(paddle_file[0], out)
    out.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    with pytest.raises(WeightsFormatError, match=re.escape(str(out))):
        load_weights(create_model(MODEL), out)


def test_cli_convert(paddle_file, tmp_path, capsys):
    pdparams, source = paddle_file
    out = tmp_path / "cli.safetensors"
    assert main(["convert", str(pdparams), str(out), "--model", MODEL, "--num-classes", "80"]) == 0
    assert f"{out}: {len(to_paddle(source.state_dict()))} tensors (paddle format -> safetensors); " \
           f"checked against {MODEL}" in capsys.readouterr().out
    assert_same_weights(create_model(MODEL, weights=out), source.state_dict())

    assert main(["convert", str(pdparams), str(tmp_path / "three.safetensors"), "--model", MODEL,
                 "--num-classes", "3"]) == 2
    error = capsys.readouterr().err
    assert "centernet convert: error:" in error and "head.heatmap.2.conv.weight: file [80, 256, 1, 1]" in error
    assert main(["convert", str(pdparams), str(tmp_path / "out.pt")]) == 2
    assert "must be a .safetensors file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli.safetensors"]


def test_python_m_centernet_convert(paddle_file, tmp_path):
    pdparams, source = paddle_file
    out = tmp_path / "sub.safetensors"
    run = subprocess.run([sys.executable, "-m", "centernet", "convert", str(pdparams), str(out)],
                         capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr
    assert "(paddle format -> safetensors)" in run.stdout
    model = create_model(MODEL)
    load_weights(model, out)
    assert_same_weights(model, source.state_dict())
