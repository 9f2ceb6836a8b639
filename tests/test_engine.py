"""Training, resuming, evaluation and prediction as a user runs them (tiny model, tiny data)."""

import csv
import json

import numpy as np
import pytest
import torch

from centernet.cli import main
from centernet.engine import trainer as trainer_module
from centernet.engine.checkpoint import load_checkpoint
from centernet.engine.predict import Detector
from centernet.engine.trainer import ModelEMA, Trainer
from conftest import MODEL, coco_stats, tiny_config


def test_cli_train_eval_predict(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(data_dir), "--model", MODEL, "--input-size", "64", "--epochs", "2",
                 "--batch-size", "4", "--workers", "0", "--run-dir", str(run), "--no-eval-keep-res",
                 "--device", "cpu", "--quiet"]) == 0
    for name in ["best.pt", "last.pt", "metrics.csv", "losses.png", "map.png", "config.yaml"]:
        assert (run / name).is_file(), name
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert all(float(row["loss"]) > 0 for row in rows)
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 1 and state["class_names"][0] == "circle"

    assert main(["eval", "--weights", str(run / "best.pt"), "--data", str(data_dir), "--device", "cpu"]) == 0
    metrics = json.loads((run / "eval" / "eval.json").read_text())
    assert set(metrics) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    detections = json.loads((run / "eval" / "detections.json").read_text())
    expected = coco_stats(data_dir / "val/annotations.json", detections)  # what the written detections score
    assert metrics["AP"] == pytest.approx(expected["AP"], abs=1e-9)
    assert metrics["AP50"] == pytest.approx(expected["AP50"], abs=1e-9)
    assert "AP50" in capsys.readouterr().out

    out = tmp_path / "pred"
    assert main(["predict", str(data_dir / "val/images"), "--weights", str(run / "best.pt"), "--out", str(out),
                 "--score-threshold", "0.0", "--device", "cpu"]) == 0
    records = json.loads((out / "predictions.json").read_text())
    assert len(records) == 4 and len(list(out.glob("*.jpg"))) == 4
    assert all(0 < len(r["detections"]) <= 100 for r in records)  # every peak above 0, top-100 at most


def test_training_is_reproducible_and_resume_continues_the_same_run(data_dir, tmp_path, monkeypatch):
    reference = Trainer(tiny_config(data_dir, epochs=3), tmp_path / "a", progress=False)
    reference.fit()
    again = Trainer(tiny_config(data_dir, epochs=3), tmp_path / "b", progress=False)
    again.fit()
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key]), key

    # Crash right after the first epoch's checkpoint, then resume in a new process-like Trainer.
    real_save = trainer_module.save_checkpoint
    calls = {"n": 0}

    def crash_after_first(state, path):
        real_save(state, path)
        calls["n"] += 1
        if path.name == "last.pt" and state["epoch"] == 0:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(trainer_module, "save_checkpoint", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(data_dir, epochs=3), tmp_path / "c", progress=False).fit()
    monkeypatch.setattr(trainer_module, "save_checkpoint", real_save)
    assert load_checkpoint(tmp_path / "c" / "last.pt")["epoch"] == 0

    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(tiny_config(data_dir, epochs=3), tmp_path / "c", progress=False)
    resumed = Trainer(tiny_config(data_dir, epochs=3), tmp_path / "c", resume=True, progress=False)
    assert resumed.start_epoch == 1
    resumed.fit()
    for key, value in reference.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)
    assert resumed.scheduler.state_dict() == reference.scheduler.state_dict()
    rows = list(csv.DictReader(open(tmp_path / "c" / "metrics.csv")))
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]


def test_ema_matches_paddle_threshold_formula():
    model = torch.nn.Linear(2, 1, bias=False)
    ema = ModelEMA(model, decay=0.9)
    values, average, decay = [1.0, 3.0, -2.0, 5.0], 0.0, 0.0
    for step, value in enumerate(values):
        model.weight.data.fill_(value)
        ema.update(model)
        decay = min(0.9, (1 + step) / (10 + step))
        average = decay * average + (1 - decay) * value
    expected = average / (1 - decay ** len(values))
    assert ema.state_dict()["weight"].flatten().tolist() == pytest.approx([expected] * 2)


def test_detector_on_arrays_of_any_size_with_flip(data_dir, tmp_path):
    from centernet import create_model

    torch.manual_seed(0)
    model = create_model(MODEL, num_classes=7)
    detector = Detector(model, input_size=(64, 64), keep_res=False, flip=True, max_detections=20, device="cpu")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in [(50, 90), (120, 40)]]
    results = detector(images)
    assert len(results) == 2
    for image, result in zip(images, results):
        assert result["boxes"].shape == (20, 4) and result["scores"].shape == (20,)
        assert (result["boxes"][:, 0::2] <= image.shape[1]).all() and (result["boxes"][:, 1::2] <= image.shape[0]).all()
        assert (result["boxes"] >= 0).all() and (result["labels"] < 7).all()
        assert torch.all(result["scores"][:-1] >= result["scores"][1:])
    with pytest.raises(ValueError, match="class names"):
        Detector(model, class_names=["a", "b"])


def test_wrong_class_count_is_a_clear_error(data_dir, tmp_path):
    config = tiny_config(data_dir)
    config.model.num_classes = 80
    with pytest.raises(ValueError, match="num_classes is 80.*7 categories"):
        Trainer(config, tmp_path / "x", progress=False)
