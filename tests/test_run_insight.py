"""What a run shows of itself: TensorBoard events (read back as TensorBoard reads them) and the
analysis files of best.pt, from a tiny training run; `centernet eval --analysis`."""

import csv
import json
import shutil
import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from centernet.cli import main
from centernet.data.coco import CocoDetection
from centernet.data.transforms import EvalTransform
from centernet.engine.analysis import ANALYSIS_FILES
from centernet.engine.evaluate import METRIC_NAMES
from centernet.engine.tensorboard_logger import validation_pictures
from centernet.engine.trainer import LOSS_NAMES, Trainer
from conftest import tiny_config

STEPS_PER_EPOCH = 2  # tiny_config: 8 training images, batch 4


@pytest.fixture(scope="module")
def run_dir(data_dir, tmp_path_factory):
    """A finished 2-epoch run (tensorboard left at its default: on, since it is installed)."""
    run = tmp_path_factory.mktemp("runs") / "run"
    Trainer(tiny_config(data_dir), run, progress=False).fit()
    return run


def events(run):
    accumulator = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def csv_rows(run):
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_tensorboard_has_step_losses_lr_val_metrics_and_drawn_val_images(run_dir, data_dir):
    board = events(run_dir)
    tags = board.Tags()
    assert set(tags["scalars"]) == {*(f"train/{name}" for name in [*LOSS_NAMES, "lr"]),
                                    *(f"val/{name}" for name in METRIC_NAMES)}
    steps = list(range(1, 2 * STEPS_PER_EPOCH + 1))
    for name in [*LOSS_NAMES, "lr"]:
        assert [event.step for event in board.Scalars(f"train/{name}")] == steps, name
    rows = csv_rows(run_dir)
    for epoch, row in enumerate(rows):  # each epoch's mean step loss and lr are metrics.csv's
        for name in LOSS_NAMES:
            values = [e.value for e in board.Scalars(f"train/{name}")][epoch * STEPS_PER_EPOCH:(epoch + 1) * STEPS_PER_EPOCH]
            assert sum(values) / len(values) == pytest.approx(float(row[name]), rel=1e-5), name
        lrs = [e.value for e in board.Scalars("train/lr")[epoch * STEPS_PER_EPOCH:(epoch + 1) * STEPS_PER_EPOCH]]
        assert lrs == pytest.approx([float(row["lr"])] * STEPS_PER_EPOCH, rel=1e-6)
    assert float(rows[0]["lr"]) != pytest.approx(float(rows[1]["lr"]))  # the drop at epoch 1 of 2 shows
    for name in METRIC_NAMES:  # one point per validation, at its epoch's last step
        points = board.Scalars(f"val/{name}")
        assert [e.step for e in points] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH], name
        assert [e.value for e in points] == pytest.approx([float(row[name]) for row in rows], abs=1e-6)

    images = json.loads((data_dir / "val/annotations.json").read_text())["images"]
    first = sorted(images, key=lambda image: image["id"])[:4]  # the val set's first 4 images, every time
    assert sorted(tags["images"]) == sorted(f"val_images/{image['file_name'].rsplit('.', 1)[0]}" for image in first)
    for image in first:
        drawn = board.Images(f"val_images/{image['file_name'].rsplit('.', 1)[0]}")
        assert [e.step for e in drawn] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
        # ground truth beside the predictions, a 4-pixel band between them
        assert {(e.width, e.height) for e in drawn} == {(2 * image["width"] + 4, image["height"])}


def test_validation_pictures_are_the_first_images_shrunk_to_max_width(data_dir):
    val = CocoDetection(data_dir / "val/images", data_dir / "val/annotations.json", EvalTransform())
    pictures = validation_pictures(val, [], count=3, max_width=120)
    assert list(pictures) == [val.image_path(i).stem for i in range(3)]
    for i, picture in enumerate(pictures.values()):
        height, width = val.coco.imgs[val.image_ids[i]]["height"], val.coco.imgs[val.image_ids[i]]["width"]
        assert picture.shape == (round(height * 120 / (2 * width + 4)), 120, 3) and picture.dtype == np.uint8


def test_the_run_folder_holds_the_analysis_of_best_pt(run_dir, data_dir):
    assert all((run_dir / name).is_file() for name in ANALYSIS_FILES)
    with open(run_dir / "per_class_ap.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    categories = json.loads((data_dir / "val/annotations.json").read_text())["categories"]
    names = [category["name"] for category in sorted(categories, key=lambda category: category["id"])]
    assert [row["class"] for row in rows] == [*names, "all"]
    best_ap = max(float(row["AP"]) for row in csv_rows(run_dir))
    assert float(rows[-1]["AP"]) == pytest.approx(best_ap, abs=1e-5)  # the mean over classes is best.pt's AP


def test_eval_analysis_writes_the_files_into_out(run_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--weights", str(run_dir / "best.pt"), "--data", str(data_dir), "--device", "cpu",
                 "--out", str(out), "--analysis"]) == 0
    assert all((out / name).is_file() for name in ANALYSIS_FILES)
    printed = capsys.readouterr().out
    assert "instances" in printed and "circle" in printed
    with open(out / "per_class_ap.csv", newline="") as handle:
        mean = list(csv.DictReader(handle))[-1]
    assert float(mean["AP"]) == pytest.approx(json.loads((out / "eval.json").read_text())["AP"], abs=1e-5)
    for name in ["per_class_ap.csv", "confusion_matrix.csv"]:  # the run folder's analysis is best.pt's
        assert (out / name).read_text() == (run_dir / name).read_text(), name


def test_a_resumed_run_logs_each_step_once(run_dir, data_dir, tmp_path):
    """Continue to 3 epochs, then again from the epoch-2 checkpoint, as after a kill between epoch
    3's events and its checkpoint: TensorBoard shows each step once, the later values."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    epoch_2 = (run / "last.pt").read_bytes()
    Trainer(tiny_config(data_dir, epochs=3), run, resume=True, progress=False).fit()
    (run / "last.pt").write_bytes(epoch_2)
    Trainer(tiny_config(data_dir, epochs=3), run, resume=True, progress=False).fit()
    board = events(run)
    assert [e.step for e in board.Scalars("train/loss")] == list(range(1, 3 * STEPS_PER_EPOCH + 1))
    assert [e.step for e in board.Scalars("val/AP")] == [STEPS_PER_EPOCH * epoch for epoch in (1, 2, 3)]


def test_tensorboard_asked_for_but_not_installed_is_a_one_line_error(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(data_dir), "--model", "centernet_mbv3_small", "--input-size", "64",
              "--epochs", "1", "--workers", "0", "--run-dir", str(tmp_path / "run"), "--device", "cpu",
              "--quiet", "--tensorboard"])
    message = str(exit_info.value.code)
    assert "pip install centernet[tensorboard]" in message and "\n" not in message
    assert not (tmp_path / "run").exists()  # refused before anything ran


def test_without_the_package_tensorboard_is_off_by_default(data_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    config = tiny_config(data_dir, epochs=1)
    config.data.val_images = config.data.val_ann = None  # no validation: the quickest run
    Trainer(config, tmp_path / "run", progress=False).fit()
    assert (tmp_path / "run" / "last.pt").is_file() and not (tmp_path / "run" / "tensorboard").exists()
