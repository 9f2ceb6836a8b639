"""`predict` / `eval` with a zoo model by name, offline: `--model NAME --pretrained` reads the cached
COCO weights (a generated PaddleDetection file in $CENTERNET_HOME), `--model NAME --weights FILE` a file."""

import json
import urllib.request

import cv2
import numpy as np
import pytest
import torch

from centernet import create_model
from centernet.cli import main
from centernet.data.coco_classes import COCO_CLASSES
from centernet.engine.predict import Detector
from centernet.viz import save_image
from centernet.weights.hub import ZOO_URLS
from conftest import coco_stats, to_paddle, write_pdparams

MODEL = "centernet_mbv3_small"


@pytest.fixture(scope="module")
def zoo_model(tmp_path_factory):
    """The tiny zoo model with a lively head, saved as PaddleDetection publishes it, in a cache folder."""
    torch.manual_seed(5)
    model = create_model(MODEL, num_classes=80)
    with torch.no_grad():
        for parameter in model.head.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    path = tmp_path_factory.mktemp("cache") / ZOO_URLS[MODEL].rsplit("/", 1)[-1]
    write_pdparams(path, to_paddle(model.state_dict()))
    return model.eval(), path


@pytest.fixture
def offline_cache(zoo_model, monkeypatch):
    """$CENTERNET_HOME holds the zoo file; any download attempt fails the test."""
    monkeypatch.setenv("CENTERNET_HOME", str(zoo_model[1].parent))

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return zoo_model


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    for name, size in [("a", (60, 90)), ("b", (100, 70))]:
        save_image(rng.integers(0, 255, (*size, 3), dtype=np.uint8), folder / f"{name}.png")
    return folder


def test_detector_from_pretrained_loads_the_zoo_weights_with_coco_names(offline_cache):
    model, _ = offline_cache
    detector = Detector.from_pretrained(MODEL, device="cpu", score_threshold=0.2)
    assert detector.class_names == list(COCO_CLASSES) and detector.score_threshold == 0.2
    for key, value in model.state_dict().items():
        torch.testing.assert_close(detector.model.state_dict()[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("weights", ["--pretrained", "--weights"])
def test_cli_predict_with_a_zoo_model_by_name(weights, offline_cache, photos, tmp_path, monkeypatch):
    model, path = offline_cache
    monkeypatch.chdir(tmp_path)  # the default output folder is runs/<model>/predictions
    flags = ["--pretrained"] if weights == "--pretrained" else ["--weights", str(path)]
    assert main(["predict", str(photos), "--model", MODEL, *flags, "--score-threshold", "0.1",
                 "--device", "cpu"]) == 0
    out = tmp_path / "runs" / MODEL / "predictions"
    for name, size in [("a", (60, 90)), ("b", (100, 70))]:
        drawn = cv2.imread(str(out / f"{name}.jpg"))
        assert drawn is not None and drawn.shape[:2] == size
    records = json.loads((out / "predictions.json").read_text())
    expected = Detector(model, device="cpu", score_threshold=0.1)(sorted(photos.iterdir()))
    assert [r["file"] for r in records] == [str(p) for p in sorted(photos.iterdir())]
    assert sum(len(r["detections"]) for r in records) > 0
    for record, result in zip(records, expected):
        assert [d["class"] for d in record["detections"]] == [COCO_CLASSES[i] for i in result["labels"]]
        assert [d["label"] for d in record["detections"]] == result["labels"].tolist()


def coco_named_split(data_dir, folder):  # noqa: F811
    """The tiny synthetic val split re-labelled with COCO's 80 categories (its 7 classes as the first 7)."""
    annotations = json.loads((data_dir / "val/annotations.json").read_text())
    first = min(category["id"] for category in annotations["categories"])
    for annotation in annotations["annotations"]:
        annotation["category_id"] = annotation["category_id"] - first + 1
    annotations["categories"] = [{"id": i + 1, "name": name} for i, name in enumerate(COCO_CLASSES)]
    path = folder / "coco80.json"
    path.write_text(json.dumps(annotations))
    return path


def test_cli_eval_with_a_zoo_model_by_name(offline_cache, data_dir, tmp_path, capsys):  # noqa: F811
    ann = coco_named_split(data_dir, tmp_path)
    out = tmp_path / "eval"
    assert main(["eval", "--model", MODEL, "--pretrained", "--images", str(data_dir / "val/images"),
                 "--ann", str(ann), "--scales", "0.75,1", "--device", "cpu", "--out", str(out)]) == 0
    metrics = json.loads((out / "eval.json").read_text())
    assert "AP50" in capsys.readouterr().out
    detections = json.loads((out / "detections.json").read_text())
    expected = coco_stats(ann, detections)
    assert (metrics["AP"], metrics["AP50"]) == pytest.approx((expected["AP"], expected["AP50"]), abs=1e-9)
    assert detections and all(1 <= d["category_id"] <= 80 for d in detections)

    # the synthetic set's own 7 categories cannot score an 80-class model
    assert main(["eval", "--model", MODEL, "--pretrained", "--data", str(data_dir), "--device", "cpu",
                 "--out", str(out)]) == 2
    assert "7 categories, fewer than the model's 80 classes" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--model", MODEL], "give --pretrained"),
    (["--model", MODEL, "--pretrained", "--weights", "x.pdparams"], "one of the two"),
    (["--pretrained"], "name the model with --model"),
    ([], "give --weights CHECKPOINT, or --model NAME"),
    (["--model", "centernet_nope", "--pretrained"], "unknown model 'centernet_nope'"),
])
def test_cli_model_flags_are_checked(flags, message, offline_cache, photos, tmp_path, capsys):
    assert main(["predict", str(photos), *flags, "--device", "cpu", "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
