"""The bad-input corpus: files, flags and faults a user really meets, made here, through the
commands (check-data, train, eval, predict, export, convert, convert-data, synth).

The rule every case holds the code to: a user's mistake or a fault (full disk, Ctrl-C) gets ONE
line on stderr naming the file or the flag and the problem, a non-zero exit code, and outputs
written before (checkpoints, eval.json, detections.json, predictions.json, drawn images, exported
graphs) come out byte-identical; or the documented recovery (odd but valid images load; training
clips boxes reaching outside the image; ``--skip-bad-data`` leaves bad entries out with a count; a
truncated video is predicted as far as it decodes, with a warning).
"""

import csv
import hashlib
import json
import os
import shutil
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from centernet.cli import main
from centernet.data.check import check_split
from conftest import assert_same_results, lively, zip_bomb

MODEL = "centernet_mbv3_small"
TINY = ["--model", MODEL, "--input-size", "64", "--epochs", "1", "--batch-size", "2", "--workers", "0",
        "--device", "cpu", "--quiet", "--no-eval-keep-res"]
CATEGORIES = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


# ----------------------------------------------------------------------------- building the corpus

def picture(height, width, seed=0):
    """Noise with a bright rectangle: an RGB uint8 image with something to detect."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 90, (height, width, 3), dtype=np.uint8)
    image[height // 4: 3 * height // 4 + 1, width // 4: 3 * width // 4 + 1] = (230, 200, 40)
    return image


def center_box(height, width):
    return [width / 4, height / 4, width / 2, height / 2]


def write_split(root, images, annotations=None, categories=CATEGORIES):
    """``images``: (file name, RGB array or None to write nothing, json (w, h) or None for the array's).
    Two boxes per image (one per category: centered, and small at the top left) unless
    ``annotations`` is given."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    entries, default_annotations = [], []
    for i, (name, array, size) in enumerate(images, start=1):
        if array is not None:
            Image.fromarray(array).save(root / "images" / name)
        width, height = size or (array.shape[1], array.shape[0])
        entries.append({"id": i, "file_name": name, "width": width, "height": height})
        default_annotations += [{"id": 2 * i - 1, "image_id": i, "category_id": 1, "bbox": center_box(height, width)},
                                {"id": 2 * i, "image_id": i, "category_id": 2,
                                 "bbox": [1, 1, max(width / 8, 1), max(height / 8, 1)]}]
    data = {"images": entries, "categories": categories,
            "annotations": default_annotations if annotations is None else annotations}
    (root / "annotations.json").write_text(json.dumps(data))
    return root


def base_split(root):
    return write_split(root, [(f"{i}.jpg", picture(96, 128, seed=i), None) for i in range(1, 4)])


def edit_json(root, change):
    path = Path(root) / "annotations.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def add_box(data, bbox, category=1, image=1, ann_id=100):
    data["annotations"].append({"id": ann_id, "image_id": image, "category_id": category, "bbox": bbox})


def truncate_image(root, name="2.jpg"):
    path = Path(root) / "images" / name
    path.write_bytes(path.read_bytes()[:400])


def exif_rotated(root, name="1.jpg", json_size="rotated"):
    """Image 1 stored 128x96 with EXIF orientation 6 (shown 96x128, rotated)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(picture(96, 128, seed=1)).save(Path(root) / "images" / name, exif=exif)
    if json_size == "stored":
        return
    edit_json(root, lambda d: d["images"][0].update(width=96, height=128))


def fingerprint(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# Error cases: (name, how to plant it, [(level, words in the message, image id, annotation id)], fatal)
ERROR_CASES = [
    ("truncated_jpeg", truncate_image, [("error", "cannot decode image", 2, None)], False),
    ("zero_byte_file", lambda r: (r / "images/3.jpg").write_bytes(b""), [("error", "not a readable image", 3, None)],
     False),
    ("missing_image", lambda r: (r / "images/2.jpg").unlink(), [("error", "image file not found", 2, None)], False),
    ("size_mismatch", lambda r: edit_json(r, lambda d: d["images"][2].update(width=100)),
     [("error", "128x96 on disk but the json says 100x96", 3, None)], False),
    ("exif_size_before_rotation", lambda r: exif_rotated(r, json_size="stored"),
     [("error", "EXIF orientation rotates it", 1, None)], False),
    ("box_outside_image", lambda r: edit_json(r, lambda d: add_box(d, [500, 10, 20, 20])),
     [("error", "lies outside the 128x96 image", 1, 100)], False),
    ("negative_size_box", lambda r: edit_json(r, lambda d: add_box(d, [10, 10, -5, 20])),
     [("error", "zero or negative size", 1, 100)], False),
    ("nan_box", lambda r: (r / "annotations.json").write_text(
        (r / "annotations.json").read_text().replace('"annotations": [', '"annotations": [{"id": 100, "image_id": 1, '
                                                     '"category_id": 1, "bbox": [NaN, 5, 10, 10]}, ')),
     [("error", "NaN or infinite", 1, 100)], False),
    ("unknown_category", lambda r: edit_json(r, lambda d: add_box(d, [10, 10, 20, 20], category=7)),
     [("error", "unknown category id 7", 1, 100)], False),
    ("unknown_image", lambda r: edit_json(r, lambda d: add_box(d, [10, 10, 20, 20], image=99)),
     [("error", "unknown image id 99", None, 100)], False),
    ("duplicate_annotation_id", lambda r: edit_json(r, lambda d: add_box(d, [10, 10, 20, 20], ann_id=2)),
     [("error", "annotations id 2 appears 2 times", None, 2)], False),
    ("empty_json", lambda r: (r / "annotations.json").write_text(""), [("error", "annotation file is empty", None, None)],
     True),
    ("malformed_json", lambda r: (r / "annotations.json").write_text('{"images": [1, 2,'),
     [("error", "invalid JSON", None, None)], True),
    ("no_categories_list", lambda r: edit_json(r, lambda d: d.pop("categories")),
     [("error", "missing list 'categories'", None, None)], True),
]

# Cases training recovers from (with the level check-data reports them at).
NOTICE_CASES = [
    ("box_partly_outside", lambda r: edit_json(r, lambda d: add_box(d, [100, 80, 60, 40])),
     [("warning", "reaches outside the 128x96 image (training clips it)", 1, 100)]),
    ("category_without_boxes", lambda r: edit_json(r, lambda d: d["categories"].append({"id": 3, "name": "c"})),
     [("warning", "category 3 ('c') has no usable box", None, None)]),
    ("image_without_annotations", lambda r: edit_json(r, lambda d: d.update(annotations=d["annotations"][2:])),
     [("info", "1.jpg has no annotations", 1, None)]),
]


# What the evaluation loader warns about instead of failing.
RECOVERED_IN_EVAL = {"box_outside_image": "skipped 1 boxes of zero area", "negative_size_box": "skipped 1 boxes",
                     "nan_box": "skipped 1 boxes", "size_mismatch": "json says 100x96",
                     "exif_size_before_rotation": "says 128x96"}


def assert_issues(report, expected):
    """``report`` holds exactly the ``expected`` issues."""
    found = [(issue.level, issue.image_id, issue.ann_id, issue.message) for issue in report.issues]
    assert len(found) == len(expected), found
    for level, words, image_id, ann_id in expected:
        assert any(f[:3] == (level, image_id, ann_id) and words in f[3] for f in found), (words, found)


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained on the clean corpus, with an eval and a prediction already written."""
    root = tmp_path_factory.mktemp("corpus")
    split = base_split(root / "clean")
    run = root / "run"
    assert main(train_args(split, run)) == 0
    assert main(["eval", "--weights", str(run / "best.pt"), "--images", str(split / "images"),
                 "--ann", str(split / "annotations.json"), "--device", "cpu", "--out", str(run / "eval")]) == 0
    assert main(["predict", str(split / "images"), "--weights", str(run / "best.pt"), "--device", "cpu",
                 "--out", str(run / "predictions")]) == 0
    return run


@pytest.fixture
def run_copy(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def train_args(split, run, *extra):
    return ["train", "--train-images", str(split / "images"), "--train-ann", str(split / "annotations.json"),
            "--run-dir", str(run), *TINY, *extra]


# ----------------------------------------------------------------------------- data cases

@pytest.mark.parametrize("name, plant, expected, fatal", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_data_errors(name, plant, expected, fatal, tmp_path, run_copy, capsys):
    split = base_split(tmp_path / "bad")
    plant(split)
    images, ann = str(split / "images"), str(split / "annotations.json")
    words = expected[0][1]

    # check-data: exactly the planted problem, exit code 1
    assert_issues(check_split(images, ann), expected)
    capsys.readouterr()
    assert main(["check-data", str(split)]) == 1
    out = capsys.readouterr().out
    assert words in out and out.count("error ") == 1, out

    # train: stops before writing anything, naming the problem (a resumed run whose data went bad:
    # test_resume_stops_before_touching_the_run_when_its_data_went_bad)
    before = fingerprint(run_copy)
    assert main(train_args(split, tmp_path / "new_run")) == 2
    err = capsys.readouterr().err
    assert words in err and ann in err, err
    assert not (tmp_path / "new_run").exists()

    # eval: a clear error naming the file, or the loader's documented recovery (bad boxes skipped
    # and a size mismatch passed, each with a warning); eval.json of an earlier eval stays intact
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["eval", "--weights", str(run_copy / "best.pt"), "--images", images, "--ann", ann,
                     "--device", "cpu", "--out", str(run_copy / "eval")])
    if code:
        assert code == 2
        err = capsys.readouterr().err
        assert ann in err or images in err, err
        assert fingerprint(run_copy) == before
    else:
        assert name in RECOVERED_IN_EVAL, name
        assert any(RECOVERED_IN_EVAL[name] in str(w.message) for w in caught), [str(w.message) for w in caught]

    # predict on the image folder: an unreadable image is a clear error naming it; predictions
    # written before stay intact
    if name in {"truncated_jpeg", "zero_byte_file"}:
        assert main(["predict", images, "--weights", str(run_copy / "best.pt"), "--device", "cpu",
                     "--out", str(run_copy / "predictions")]) == 2
        assert images in capsys.readouterr().err
        assert fingerprint(run_copy) == before


@pytest.mark.parametrize("name, plant, expected", NOTICE_CASES, ids=[c[0] for c in NOTICE_CASES])
def test_notices_are_reported_and_training_goes_on(name, plant, expected, tmp_path, capsys):
    split = base_split(tmp_path / "data")
    plant(split)
    assert_issues(check_split(split / "images", split / "annotations.json"), expected)
    assert main(["check-data", str(split), "--verbose"]) == 0
    assert expected[0][1] in capsys.readouterr().out


def test_check_data_on_the_whole_corpus_prints_every_planted_problem_and_nothing_else(tmp_path, capsys):
    cases = [case[:3] for case in ERROR_CASES] + NOTICE_CASES
    for name, plant, _ in cases:
        plant(base_split(tmp_path / name))
    assert main(["check-data", str(tmp_path), "--verbose"]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if line.split(" ")[0] in ("error", "warning", "info")]
    assert len(lines) == sum(len(expected) for _, _, expected in cases), lines
    for name, _, expected in cases:
        mine = [line for line in lines if f"{tmp_path / name}/" in line]
        assert len(mine) == len(expected) and all(any(words in line for line in mine) for _, words, *_ in expected), mine


def test_skip_bad_data_trains_on_the_rest_with_a_count(tmp_path, capsys):
    split = write_split(tmp_path / "data", [(f"{i}.jpg", picture(96, 128, seed=i), None) for i in range(1, 6)])
    truncate_image(split, "2.jpg")
    (split / "images/3.jpg").unlink()
    edit_json(split, lambda d: (add_box(d, [float("nan"), 5, 10, 10], ann_id=100),
                                add_box(d, [10, 10, 20, 20], category=9, image=4, ann_id=101),
                                add_box(d, [100, 80, 60, 40], image=5, ann_id=102)))
    run = tmp_path / "run"
    assert main(train_args(split, run)) == 2
    err = capsys.readouterr().err
    assert "4 data error(s)" in err and "--skip-bad-data" in err and not run.exists()
    with pytest.warns(UserWarning, match="left out 2 images and 6 annotations with 4 data errors"):
        assert main(train_args(split, run, "--skip-bad-data")) == 0
    assert (run / "last.pt").is_file()
    # without the check, the data set's own checks still stop at the first problem, clearly
    assert main(train_args(split, tmp_path / "run2", "--no-check-data")) == 2
    assert "annotation 101 has unknown category id 9" in capsys.readouterr().err


def test_odd_but_valid_images_go_through_everything(tmp_path, capsys):
    """PNG named .jpg, 16-bit PNG, CMYK JPEG, grayscale, RGBA, EXIF-rotated, 1x1, 1:100 aspect."""
    root = tmp_path / "odd"
    split = write_split(root, [(f"{i}.jpg", picture(96, 128, seed=i), None) for i in range(1, 3)])
    odd = [("png_named_jpg.jpg", "PNG", picture(40, 50)),
           ("sixteen_bit.png", "PNG", (np.asarray(Image.fromarray(picture(40, 50)).convert("L"), np.uint16) * 257)),
           ("cmyk.jpg", "CMYK", picture(40, 50)),
           ("gray.png", "L", picture(40, 50)),
           ("rgba.png", "RGBA", picture(40, 50)),
           ("one_pixel.png", "PNG", picture(1, 1)),
           ("wide.png", "PNG", picture(8, 800))]
    data = json.loads((split / "annotations.json").read_text())
    for name, kind, array in odd:
        path = split / "images" / name
        if kind == "CMYK":
            Image.fromarray(array).convert("CMYK").save(path, "JPEG")
        elif kind in ("L", "RGBA"):
            Image.fromarray(array).convert(kind).save(path)
        else:
            Image.fromarray(array).save(path, "PNG")
        height, width = array.shape[:2]
        image_id = len(data["images"]) + 1
        data["images"].append({"id": image_id, "file_name": name, "width": width, "height": height})
        data["annotations"].append({"id": 100 + image_id, "image_id": image_id, "category_id": 1,
                                    "bbox": center_box(height, width)})
    (split / "annotations.json").write_text(json.dumps(data))
    exif_rotated(split)  # image 1 now stored rotated, json has the displayed size

    report = check_split(split / "images", split / "annotations.json")
    assert report.issues == [] and report.num_boxes == 11
    assert main(["check-data", str(split)]) == 0
    run = tmp_path / "run"
    images, ann = str(split / "images"), str(split / "annotations.json")
    assert main(["train", "--train-images", images, "--train-ann", ann, "--val-images", images, "--val-ann", ann,
                 "--run-dir", str(run), *TINY]) == 0
    assert main(["eval", "--weights", str(run / "best.pt"), "--images", images, "--ann", ann, "--device", "cpu"]) == 0
    assert main(["predict", images, "--weights", str(run / "best.pt"), "--device", "cpu", "--out",
                 str(tmp_path / "pred")]) == 0
    records = json.loads((tmp_path / "pred/predictions.json").read_text())
    assert len(records) == 9


# ----------------------------------------------------------------------------- weights cases

class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_truncated_checkpoint(run_copy, tmp_path, capsys):
    split = base_split(tmp_path / "data")
    data = (run_copy / "last.pt").read_bytes()
    (run_copy / "last.pt").write_bytes(data[: len(data) // 2])
    before = fingerprint(run_copy)
    assert main(train_args(split, run_copy, "--resume")) == 2
    assert "last.pt" in (err := capsys.readouterr().err) and "truncated or corrupt" in err
    for command in (["predict", str(split / "images")], ["eval", "--data", str(tmp_path), "--split", "data"]):
        assert main([*command, "--weights", str(run_copy / "last.pt"), "--device", "cpu",
                     "--out", str(run_copy / "out")]) == 2
        assert "truncated or corrupt" in capsys.readouterr().err
    assert fingerprint(run_copy) == before


def test_malicious_pickle_never_runs(run_copy, tmp_path, capsys):
    split = base_split(tmp_path / "data")
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _Exploit(marker)}, evil)
    shutil.copy(evil, run_copy / "last.pt")
    before = fingerprint(run_copy)
    assert main(train_args(split, run_copy, "--resume")) == 2
    assert "refused" in capsys.readouterr().err
    assert main(train_args(split, tmp_path / "new", "--pretrained", str(evil))) == 2
    assert "refused" in capsys.readouterr().err
    for command in (["predict", str(split / "images")], ["eval", "--data", str(tmp_path), "--split", "data"]):
        assert main([*command, "--weights", str(evil), "--device", "cpu", "--out", str(run_copy / "out")]) == 2
        assert "refused" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "new").exists()
    assert fingerprint(run_copy) == before


def test_weights_of_another_model(trained, tmp_path, capsys):
    split = base_split(tmp_path / "data")
    run = tmp_path / "run"
    assert main(train_args(split, run, "--model", "centernet_shufflenetv2", "--pretrained",
                           str(trained / "best.pt"))) == 2
    err = capsys.readouterr().err
    assert "best.pt: does not fit" in err and "nothing loaded" in err and not run.exists()
    state_dict = tmp_path / "state_dict.pt"  # bare weights, not a checkpoint: predict cannot know the model
    torch.save(torch.load(trained / "best.pt", weights_only=True)["model"], state_dict)
    assert main(["predict", str(split / "images"), "--weights", str(state_dict), "--device", "cpu",
                 "--out", str(tmp_path / "pred")]) == 2
    assert "not a centernet checkpoint" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the rule, as a helper

def error_line(capsys, *words):
    """The command's one error line on stderr (no traceback), holding each of ``words``."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    for word in words:
        assert str(word) in errors[0], (word, errors[0])
    return errors[0]


def fails(argv, code=2):
    """Run the command; argparse's refusals (SystemExit) and main's return codes alike."""
    try:
        result = main(argv)
    except SystemExit as exit_info:
        result = exit_info.code
    assert result == code, (argv, result)


# ----------------------------------------------------------------------------- flags

def _flag_cases():
    cases = [
        ("train_epochs_zero", "train", ["--epochs", "0"]), ("train_epochs_negative", "train", ["--epochs", "-3"]),
        ("train_head_planes_zero", "train", ["--head-planes", "0"]),
        ("train_batch_size_zero", "train", ["--batch-size", "0"]), ("train_lr_zero", "train", ["--lr", "0"]),
        ("train_lr_nan", "train", ["--lr", "nan"]), ("train_workers_negative", "train", ["--workers", "-1"]),
        ("train_accumulate_zero", "train", ["--accumulate", "0"]), ("train_seed_negative", "train", ["--seed", "-1"]),
        ("train_grad_clip_zero", "train", ["--grad-clip", "0"]),
        ("train_checkpoint_interval_negative", "train", ["--checkpoint-interval", "-1"]),
        ("train_epochs_not_a_number", "train", ["--epochs", "ten"]),
        ("train_device_gpu_not_there", "train", ["--device", "cuda:99"]),
        ("train_device_unknown", "train", ["--device", "banana"]),
        ("predict_score_threshold_2", "predict", ["--score-threshold", "2"]),
        ("predict_score_threshold_negative", "predict", ["--score-threshold", "-0.1"]),
        ("predict_batch_size_zero", "predict", ["--batch-size", "0"]),
        ("predict_camera_negative", "predict", ["--camera", "-1"]),
        ("eval_batch_size_zero", "eval", ["--batch-size", "0"]), ("eval_device_gpu_not_there", "eval", ["--device", "cuda:99"]),
        ("export_max_detections_zero", "export", ["--max-detections", "0"]),
        ("export_num_classes_zero", "export", ["--model", MODEL, "--num-classes", "0"]),
        ("synth_train_negative", "synth", ["--train", "-5"]), ("synth_val_zero", "synth", ["--val", "0"]),
        ("benchmark_repeat_zero", "benchmark", ["--repeat", "0"]),
    ]
    if not torch.cuda.is_available():  # the plain name, on a machine without a GPU
        cases += [("train_device_cuda_without_gpu", "train", ["--device", "cuda"]),
                  ("predict_device_cuda_without_gpu", "predict", ["--device", "cuda"])]
    return cases


FLAG_CASES = _flag_cases()


@pytest.mark.parametrize("name, command, flags", FLAG_CASES, ids=[case[0] for case in FLAG_CASES])
def test_flags_out_of_range_are_refused_naming_the_flag(name, command, flags, run_copy, tmp_path, capsys):
    """A whole, otherwise valid command line with one bad value: refused before anything runs."""
    split = base_split(tmp_path / "data")
    weights, images = str(run_copy / "best.pt"), str(split / "images")
    argv = {"train": train_args(split, run_copy, "--resume"),
            "predict": ["predict", images, "--weights", weights, "--out", str(run_copy / "predictions")],
            "eval": ["eval", "--weights", weights, "--images", images, "--ann", str(split / "annotations.json"),
                     "--out", str(run_copy / "eval")],
            "export": ["export", "--weights", weights, "--out", str(run_copy / "model.onnx")],
            "synth": ["synth", "--out", str(run_copy / "synth")],
            "benchmark": ["benchmark", "--model", MODEL]}[command]
    before = fingerprint(run_copy)
    fails([*argv, *flags])
    error_line(capsys, f"argument {flags[-2]}", flags[-1])
    assert fingerprint(run_copy) == before


@pytest.mark.parametrize("section, key, value", [("train", "epochs", 0), ("model", "head_planes", 0),
                                                 ("train", "device", "cuda:99"), ("data", "workers", -2)])
def test_bad_values_in_a_config_file_are_named(section, key, value, tmp_path, capsys):
    split = base_split(tmp_path / "data")
    config = tmp_path / "bad.yml"
    config.write_text(f"{section}:\n  {key}: {value}\n")
    run = tmp_path / "run"
    fails(["train", "--config", str(config), "--train-images", str(split / "images"), "--train-ann",
           str(split / "annotations.json"), "--model", MODEL, "--run-dir", str(run), "--quiet"])
    error_line(capsys, f"{section}.{key}", value)
    assert not run.exists()


# ----------------------------------------------------------------------------- paths of the wrong kind

WRONG_PATHS = [  # (name, the command line from (split, run, a file), exit code, words of the error line)
    ("run_dir_is_a_file", lambda split, run, file: train_args(split, file), 2, ["--run-dir", "is a file, not a folder"]),
    ("predict_out_is_a_file", lambda split, run, file: ["predict", str(split / "images"), "--weights",
                                                         str(run / "best.pt"), "--device", "cpu", "--out", str(file)],
     1, ["is a file, not a folder", "1.jpg (nothing there was replaced)"]),
    ("export_out_is_a_folder", lambda split, run, file: ["export", "--weights", str(run / "best.pt"), "--out",
                                                         str(split)], 1, ["a folder is in the way", "data"]),
    ("image_folder_is_a_file", lambda split, run, file: ["eval", "--weights", str(run / "best.pt"), "--images",
                                                         str(file), "--ann", str(split / "annotations.json")],
     2, ["a_file: is a file, not the folder of the images"]),
    ("an_image_as_checkpoint", lambda split, run, file: ["eval", "--weights", str(split / "images/1.jpg"), "--images",
                                                         str(split / "images"), "--ann", str(split / "annotations.json")],
     2, ["1.jpg: not a readable checkpoint"]),
    ("input_size_not_a_number", lambda split, run, file: [*train_args(split, run), "--input-size", "abc"],
     2, ["argument --input-size", "'abc'"]),
]


@pytest.mark.parametrize("name, argv, code, words", WRONG_PATHS, ids=[case[0] for case in WRONG_PATHS])
def test_paths_of_the_wrong_kind_are_named(name, argv, code, words, run_copy, tmp_path, capsys):
    split = base_split(tmp_path / "data")
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    before = fingerprint(run_copy)
    fails(argv(split, run_copy, a_file), code=code)
    error_line(capsys, *words)
    assert fingerprint(run_copy) == before and a_file.read_text() == "not a folder"


# ----------------------------------------------------------------------------- resume

RESUME_REFUSED = [  # (flags, words of the one error line)
    ("another_lr", ["--lr", "0.01"], ["--lr 0.01 (the run: 0.0005)"]),
    ("another_batch_size", ["--batch-size", "3"], ["--batch-size 3 (the run: 2)"]),
    ("another_model", ["--model", "centernet_shufflenetv2"], ["--model centernet_shufflenetv2 (the run: " + MODEL]),
    ("another_head_planes", ["--head-planes", "32"], ["--head-planes 32 (the run: None)"]),
    ("another_input_size", ["--input-size", "96"], ["--input-size 96x96 (the run: 64x64)"]),
    ("another_eval_mode", ["--eval-keep-res"], ["--eval-keep-res True (the run: False)"]),
    ("skip_bad_data", ["--skip-bad-data"], ["--skip-bad-data True (the run: False)"]),
    ("several_at_once", ["--lr", "0.01", "--seed", "3", "--amp"],
     ["3 given setting(s) differ", "--lr 0.01", "--seed 3 (the run: 0)", "--amp True (the run: False)"]),
    ("pretrained", ["--pretrained", "weights.pth"], ["--pretrained", "leave --pretrained out"]),
    ("epochs_already_done", [], ["all its 1 epochs", "--epochs N with N > 1"]),
    ("epochs_shorter_than_done", ["--epochs", "1", "--checkpoint-interval", "3"], ["all its 1 epochs"]),
]


@pytest.mark.parametrize("name, flags, words", RESUME_REFUSED, ids=[case[0] for case in RESUME_REFUSED])
def test_resume_refuses_settings_that_contradict_the_run(name, flags, words, run_copy, capsys):
    """--resume continues the run as it was configured (last.pt's config): a flag that contradicts
    it is refused, listing the differences, before the run folder is touched."""
    before = fingerprint(run_copy)
    extra = [] if "--epochs" in flags or name == "epochs_already_done" else ["--epochs", "2"]
    fails(["train", "--run-dir", str(run_copy), "--resume", "--quiet", *flags, *extra])
    error_line(capsys, run_copy / "last.pt" if name != "pretrained" else "--pretrained", *words)
    assert fingerprint(run_copy) == before


def test_plain_resume_takes_everything_from_last_pt_and_extending_keeps_the_lr_drops(run_copy, capsys):
    """`centernet train --run-dir R --resume --epochs 2`: no flag repeated; model, data, lr and
    batch come from last.pt; the safe flags (--workers, --device) apply; config.yaml says what ran."""
    assert main(["train", "--run-dir", str(run_copy), "--resume", "--epochs", "2", "--workers", "0",
                 "--device", "cpu", "--quiet", "--no-tensorboard"]) == 0
    config = yaml.safe_load((run_copy / "config.yaml").read_text())
    assert config["model"]["name"] == MODEL and config["train"]["lr"] == 0.0005 and config["train"]["batch_size"] == 2
    assert config["train"]["epochs"] == 2 and config["train"]["tensorboard"] is False
    # the 1-epoch run's schedule has no lr drop inside it; extended, it still has none
    assert config["train"]["milestones"] == [] and config["train"]["schedule_epochs"] == 2
    with open(run_copy / "metrics.csv") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2"]
    assert torch.load(run_copy / "last.pt", weights_only=True)["epoch"] == 1


def test_extending_a_run_keeps_its_learning_rate_drops_where_they_were():
    from centernet.config import Config
    from centernet.engine.resume import resumed_config

    stored = Config()
    stored.train.epochs = 9  # Paddle's 90/120 of 140, scaled: drops after epochs 6 and 8
    assert stored.train.scaled_milestones() == [6, 8]
    given = Config()
    given.train.epochs = 20
    extended = resumed_config("R/last.pt", stored, 9, given, {"train.epochs": "--epochs"})
    assert extended.train.epochs == 20 and extended.train.scaled_milestones() == [6, 8]
    shortened = resumed_config("R/last.pt", stored, 3, _with_epochs(Config(), 7), {"train.epochs": "--epochs"})
    assert shortened.train.scaled_milestones() == [6]  # the drop after epoch 8 lies beyond the new end
    with pytest.raises(ValueError, match="--epochs 5: the run in R has already completed 6 epochs"):
        resumed_config("R/last.pt", stored, 6, _with_epochs(Config(), 5), {"train.epochs": "--epochs"})
    # a config file naming another schedule is compared by the lr drops it gives
    other = _with_epochs(Config(), 9)
    other.train.milestones, other.train.schedule_epochs = (3,), 9
    labels = {"train.milestones": "train.milestones in c.yml", "train.schedule_epochs": "in c.yml"}
    with pytest.raises(ValueError, match=r"milestones in c.yml: learning-rate drops after epochs \[3\] "
                                         r"\(the run: after \[6, 8\]\)"):
        resumed_config("R/last.pt", stored, 4, other, labels)
    other.train.milestones, other.train.schedule_epochs = (6, 8), 9  # the same drops, written otherwise
    assert resumed_config("R/last.pt", stored, 4, other, labels).train.scaled_milestones() == [6, 8]


def _with_epochs(config, epochs):
    config.train.epochs = epochs
    return config


def test_resume_with_a_config_file_compares_what_the_file_names(run_copy, tmp_path, capsys):
    config = tmp_path / "c.yml"
    config.write_text("train:\n  lr: 0.01\n")
    before = fingerprint(run_copy)
    fails(["train", "--config", str(config), "--run-dir", str(run_copy), "--resume", "--epochs", "2", "--quiet"])
    error_line(capsys, f"train.lr in {config} 0.01 (the run: 0.0005)")
    assert fingerprint(run_copy) == before


def test_resume_without_a_run_or_its_configuration(run_copy, tmp_path, capsys):
    fails(["train", "--run-dir", str(tmp_path / "nothing"), "--resume", "--quiet"])
    error_line(capsys, tmp_path / "nothing" / "last.pt", "does not exist", "leave out --resume")
    state = torch.load(run_copy / "last.pt", weights_only=True)
    torch.save({"model": state["model"]}, run_copy / "last.pt")  # a hand-made checkpoint
    before = fingerprint(run_copy)
    fails(["train", "--run-dir", str(run_copy), "--resume", "--quiet"])
    error_line(capsys, run_copy / "last.pt", "not the configuration of the run", "cannot be resumed")
    assert fingerprint(run_copy) == before


def test_resume_stops_before_touching_the_run_when_its_data_went_bad(tmp_path, capsys):
    split = base_split(tmp_path / "data")
    run = tmp_path / "run"
    assert main(train_args(split, run)) == 0
    truncate_image(split)
    before = fingerprint(run)
    fails(["train", "--run-dir", str(run), "--resume", "--epochs", "2", "--quiet"])
    error_line(capsys, split / "annotations.json", "cannot decode image")
    assert fingerprint(run) == before


CTRL_C_DRIVER = r'''
import os, signal, sys, time
import torch
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background CI job may ignore it)
real_step, steps = torch.optim.Adam.step, {"n": 0}

def step(self, *args, **kwargs):
    steps["n"] += 1
    if steps["n"] == int(os.environ["STOP_AT_STEP"]):
        print("READY", flush=True)
        time.sleep(600)  # Ctrl-C arrives here, in the middle of training
    return real_step(self, *args, **kwargs)

torch.optim.Adam.step = step
from centernet.cli import main
sys.exit(main(sys.argv[1:]))
'''


def test_ctrl_c_during_training_says_where_last_pt_is_and_how_to_resume(tmp_path):
    import subprocess
    import sys

    split = base_split(tmp_path / "data")
    run = tmp_path / "run"
    driver = tmp_path / "driver.py"
    driver.write_text(CTRL_C_DRIVER)
    env = dict(os.environ, STOP_AT_STEP="3", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    command = [sys.executable, str(driver), *train_args(split, run, "--epochs", "3", "--checkpoint-interval", "1")]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "READY"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    assert f"{run / 'last.pt'}" in lines[0] and f"centernet train --run-dir {run} --resume" in lines[0], err
    # 3 images in batches of 2: one step an epoch; stopped in step 3, last.pt holds epoch 2 whole
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1
    # the run continues as the line says, with nothing else repeated
    assert main(["train", "--run-dir", str(run), "--resume", "--quiet"]) == 0
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 2


# ----------------------------------------------------------------------------- disk full

def test_disk_full_during_eval_keeps_the_previous_eval_whole(run_copy, tmp_path, full_disk, capsys):
    split = base_split(tmp_path / "data")
    before = fingerprint(run_copy)
    full_disk(room=10, only="eval.json")  # detections.json fits, eval.json does not
    fails(["eval", "--weights", str(run_copy / "best.pt"), "--images", str(split / "images"), "--ann",
           str(split / "annotations.json"), "--device", "cpu", "--out", str(run_copy / "eval"),
           "--flip"], code=1)  # (--flip: other detections than those already there)
    error_line(capsys, f"no space left on device: {run_copy / 'eval' / 'eval.json'}")
    assert fingerprint(run_copy) == before  # detections.json was not replaced either, and no temp file is left


def test_disk_full_during_predict_keeps_the_previous_predictions_whole(run_copy, tmp_path, full_disk, capsys):
    split = base_split(tmp_path / "data")
    before = fingerprint(run_copy)
    full_disk(room=100, only="2.jpg")  # the second drawn image of three
    fails(["predict", str(split / "images"), "--weights", str(run_copy / "best.pt"), "--device", "cpu",
           "--score-threshold", "0", "--out", str(run_copy / "predictions")], code=1)  # (other boxes drawn)
    error_line(capsys, f"no space left on device: {run_copy / 'predictions' / '2.jpg'}")
    assert fingerprint(run_copy) == before


def test_disk_full_while_saving_a_checkpoint_keeps_last_pt_and_says_how_to_resume(run_copy, full_disk, capsys):
    last = (run_copy / "last.pt").read_bytes()
    full_disk(room=4096, only="last.pt")
    fails(["train", "--run-dir", str(run_copy), "--resume", "--epochs", "2", "--quiet"], code=1)
    error_line(capsys, f"no space left on device: {run_copy / 'last.pt'} (nothing there was replaced)",
               f"centernet train --run-dir {run_copy} --resume --epochs 2")
    assert (run_copy / "last.pt").read_bytes() == last
    assert not [p for p in run_copy.iterdir() if p.name.endswith(".tmp")]
    full_disk.undo()  # room again: the run continues from the kept last.pt, as the line says
    assert main(["train", "--run-dir", str(run_copy), "--resume", "--epochs", "2", "--quiet"]) == 0
    with open(run_copy / "metrics.csv") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2"]


def test_disk_full_before_the_first_checkpoint_says_nothing_was_saved(tmp_path, full_disk, capsys):
    split = base_split(tmp_path / "data")
    full_disk()
    fails(train_args(split, tmp_path / "run"), code=1)
    error_line(capsys, "no space left on device", "config.yaml", "no checkpoint was written yet")
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("command", ["export", "convert", "convert-data"])
def test_disk_full_keeps_an_earlier_converted_or_exported_file(command, run_copy, tmp_path, full_disk, capsys):
    if command == "export":
        pytest.importorskip("onnx")
    split = base_split(tmp_path / "data")
    out = tmp_path / {"export": "model.onnx", "convert": "model.safetensors", "convert-data": "data.json"}[command]
    out.write_bytes(b"an earlier output")
    if command == "convert-data":
        voc_folder(tmp_path / "voc", split)
    argv = {"export": ["export", "--weights", str(run_copy / "best.pt"), "--out", str(out)],
            "convert": ["convert", str(run_copy / "best.pt"), str(out)],
            "convert-data": ["convert-data", str(tmp_path / "voc"), "--out", str(out)]}[command]
    full_disk(room=50)
    fails(argv, code=1)
    error_line(capsys, f"no space left on device: {out}")
    assert out.read_bytes() == b"an earlier output" and sorted(p.name for p in tmp_path.iterdir() if ".tmp" in p.name) == []


# ----------------------------------------------------------------------------- weights

def nan_checkpoint(run, path):
    state = torch.load(run / "best.pt", weights_only=True)
    key = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][key] = state["model"][key].clone().fill_(float("nan"))
    torch.save(state, path)
    return key


def test_a_zip_bomb_named_pth_is_refused_before_it_inflates(run_copy, tmp_path, capsys):
    split = base_split(tmp_path / "data")
    bomb = zip_bomb(tmp_path / "model.pth", 200 << 20)
    before = fingerprint(run_copy)
    for argv in (["predict", str(split / "images"), "--model", MODEL, "--weights", str(bomb)],
                 ["eval", "--weights", str(bomb), "--images", str(split / "images"), "--ann",
                  str(split / "annotations.json")],
                 train_args(split, tmp_path / "new", "--pretrained", str(bomb))):
        fails([*argv, "--device", "cpu", "--out", str(run_copy / "out")] if argv[0] != "train" else argv)
        error_line(capsys, bomb, "refused to load", "zip bomb")
    assert fingerprint(run_copy) == before and not (tmp_path / "new").exists()


def test_non_finite_weights_are_refused_naming_the_tensor(run_copy, tmp_path, capsys):
    split = base_split(tmp_path / "data")
    broken = tmp_path / "nan.pt"
    key = nan_checkpoint(run_copy, broken)
    before = fingerprint(run_copy)
    for argv in (["predict", str(split / "images"), "--weights", str(broken), "--out", str(run_copy / "predictions")],
                 ["eval", "--weights", str(broken), "--images", str(split / "images"), "--ann",
                  str(split / "annotations.json"), "--out", str(run_copy / "eval")],
                 ["predict", str(split / "images"), "--model", MODEL, "--weights", str(broken)],
                 train_args(split, tmp_path / "new", "--pretrained", str(broken))):
        fails(argv)
        error_line(capsys, broken, "NaN or infinite", key)
    shutil.copy(broken, run_copy / "last.pt")  # a run whose last checkpoint went bad
    before = fingerprint(run_copy)
    fails(["train", "--run-dir", str(run_copy), "--resume", "--epochs", "2", "--quiet"])
    error_line(capsys, run_copy / "last.pt", "NaN or infinite", key)
    assert fingerprint(run_copy) == before and not (tmp_path / "new").exists()


def test_a_hand_made_model_only_checkpoint_asks_for_the_model_name(run_copy, tmp_path, capsys):
    split = base_split(tmp_path / "data")
    bare = tmp_path / "bare.pt"
    torch.save({"model": torch.load(run_copy / "best.pt", weights_only=True)["model"]}, bare)
    for argv in (["predict", str(split / "images"), "--weights", str(bare), "--out", str(tmp_path / "p")],
                 ["export", "--weights", str(bare), "--out", str(tmp_path / "m.onnx")]):
        fails(argv)
        error_line(capsys, bare, "not the configuration of the run", f"--model NAME --weights {bare}")
    # and with the model named, as the line says, it works
    assert main(["predict", str(split / "images"), "--model", MODEL, "--weights", str(bare), "--device", "cpu",
                 "--out", str(tmp_path / "p")]) == 0


def test_weights_files_that_are_not_what_they_claim(tmp_path, capsys):
    split = base_split(tmp_path / "data")
    lying = tmp_path / "lying.safetensors"  # declares a 1 GB header in a 100-byte file
    lying.write_bytes((1 << 30).to_bytes(8, "little") + b'{"w": {"dtype": "F32"' + bytes(71))
    folder = tmp_path / "weights.pth"
    folder.mkdir()

    class Exploit:
        def __reduce__(self):
            return (os.system, ("true",))

    legacy = tmp_path / "legacy.pth"
    torch.save({"state_dict": {}, "x": Exploit()}, legacy, _use_new_zipfile_serialization=False)
    for path, words in ((lying, ["declares a 1073741824-byte header in a 100-byte file"]),
                        (folder, ["is a folder"]), (legacy, ["refused to load", "system"])):
        fails(["predict", str(split / "images"), "--model", MODEL, "--weights", str(path), "--device", "cpu",
               "--out", str(tmp_path / "p")])
        line = error_line(capsys, path, *words)
        assert "weights_only" not in line
    fails(["eval", "--weights", str(folder), "--images", str(split / "images"), "--ann", str(split / "annotations.json")])
    error_line(capsys, folder, "is a folder")


# ----------------------------------------------------------------------------- data

def list_image_id(root):
    edit_json(root, lambda d: (d["images"][0].update(id=[1]),
                               [ann.update(image_id=[1]) for ann in d["annotations"] if ann["image_id"] == 1]))


DATA_REFUSED = [  # (name, plant, words of check-data's error line, words of eval's and train --no-check-data's)
    ("image_id_is_a_list", list_image_id, "has an id that is not an integer: [1]", "images id [1] is not an integer"),
    ("image_id_is_a_string", lambda r: edit_json(r, lambda d: d["images"][1].update(id="two")),
     "has an id that is not an integer: 'two'", "images id 'two' is not an integer"),
    ("same_file_under_two_ids", lambda r: edit_json(r, lambda d: d["images"][2].update(file_name="1.jpg", width=128)),
     "1.jpg is already listed as image 1", "image file '1.jpg' appears under images ids 1, 3"),
    ("two_categories_one_name", lambda r: edit_json(r, lambda d: d["categories"][1].update(name="a")),
     "category name 'a' appears under categories ids 1, 2", "category name 'a' appears under categories ids 1, 2"),
    ("latin1_json", lambda r: (r / "annotations.json").write_bytes(
        (r / "annotations.json").read_text().replace('"name": "b"', '"name": "caf\\u00e9"').replace(
            "\\u00e9", "\xe9").encode("latin-1")),
     "not UTF-8 text (byte 0xe9", "not UTF-8 text (byte 0xe9"),
    ("image_is_a_folder", lambda r: ((r / "images/3.jpg").unlink(), (r / "images/3.jpg").mkdir()),
     "is a folder, not an image file", None),
]


@pytest.mark.parametrize("name, plant, check_words, load_words", DATA_REFUSED, ids=[c[0] for c in DATA_REFUSED])
def test_malformed_data_is_named_by_every_command(name, plant, check_words, load_words, run_copy, tmp_path, capsys):
    split = base_split(tmp_path / "bad")
    plant(split)
    images, ann = str(split / "images"), str(split / "annotations.json")
    assert main(["check-data", str(split)]) == 1
    out = capsys.readouterr().out
    assert check_words in out and f"error   {split}" in out, out
    before = fingerprint(run_copy)
    commands = [train_args(split, tmp_path / "new_run"), train_args(split, tmp_path / "new_run", "--no-check-data")]
    commands += [] if load_words is None else [["eval", "--weights", str(run_copy / "best.pt"), "--images", images,
                                                "--ann", ann, "--device", "cpu", "--out", str(run_copy / "eval")]]
    for argv in commands:
        fails(argv)
        error_line(capsys, split, check_words if "--no-check-data" not in argv and argv[0] == "train"
                   else (load_words or check_words))
    assert fingerprint(run_copy) == before
    assert not (tmp_path / "new_run" / "last.pt").exists()  # (unchecked, a folder is only met in training)


def test_a_folder_named_like_an_image_does_not_stop_a_prediction_folder(run_copy, tmp_path, capsys):
    split = base_split(tmp_path / "data")
    (split / "images" / "album.jpg").mkdir()
    out = tmp_path / "pred"
    assert main(["predict", str(split / "images"), "--weights", str(run_copy / "best.pt"), "--device", "cpu",
                 "--out", str(out)]) == 0
    records = json.loads((out / "predictions.json").read_text())
    assert [Path(r["file"]).name for r in records] == ["1.jpg", "2.jpg", "3.jpg"]


def voc_folder(root, split, boxes=None):
    """The corpus split as a VOC folder (one xml per image); ``boxes``: {image index: [(name, xmin,
    ymin, xmax, ymax)]} replaces the boxes of those images."""
    data = json.loads((split / "annotations.json").read_text())
    (root / "Annotations").mkdir(parents=True)
    shutil.copytree(split / "images", root / "JPEGImages")
    names = {c["id"]: c["name"] for c in data["categories"]}
    for index, image in enumerate(data["images"]):
        objects = [(names[a["category_id"]], a["bbox"][0] + 1, a["bbox"][1] + 1, a["bbox"][0] + a["bbox"][2],
                    a["bbox"][1] + a["bbox"][3]) for a in data["annotations"] if a["image_id"] == image["id"]]
        objects = (boxes or {}).get(index, objects)
        xml = "".join(f"<object><name>{n}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
                      f"<ymax>{y1}</ymax></bndbox></object>" for n, x0, y0, x1, y1 in objects)
        (root / "Annotations" / f"{Path(image['file_name']).stem}.xml").write_text(
            f"<annotation><filename>{image['file_name']}</filename><size><width>{image['width']}</width>"
            f"<height>{image['height']}</height></size>{xml}</annotation>")
    (root / "ImageSets/Main").mkdir(parents=True)
    (root / "ImageSets/Main/train.txt").write_text("1\n2\n3\n")
    return root


def yolo_folder(root, split, lines=None):
    """The corpus split as a YOLO folder; ``lines``: {image stem: label file text} replaces those."""
    data = json.loads((split / "annotations.json").read_text())
    (root / "labels/train").mkdir(parents=True)
    shutil.copytree(split / "images", root / "images/train")
    (root / "classes.txt").write_text("a\nb\n")
    for image in data["images"]:
        stem = Path(image["file_name"]).stem
        text = "".join(f"{a['category_id'] - 1} {(a['bbox'][0] + a['bbox'][2] / 2) / image['width']:.6f} "
                       f"{(a['bbox'][1] + a['bbox'][3] / 2) / image['height']:.6f} {a['bbox'][2] / image['width']:.6f} "
                       f"{a['bbox'][3] / image['height']:.6f}\n" for a in data["annotations"] if a["image_id"] == image["id"])
        path = root / "labels/train" / f"{stem}.txt"
        if (lines or {}).get(stem) is not None:
            path.write_bytes(lines[stem] if isinstance(lines[stem], bytes) else lines[stem].encode())
        else:
            path.write_text(text)
    return root


VOC_YOLO_CASES = [  # (name, make the folder, words naming the source of the problem)
    ("voc_inverted_box", lambda r, s: voc_folder(r, s, {1: [("a", 50, 10, 20, 40)]}),
     ["Annotations/2.xml: object 0 (a): its box is inverted: xmin 50 xmax 20"]),
    ("voc_unknown_number", lambda r, s: voc_folder(r, s, {0: [("a", "ten", 10, 20, 40)]}),
     ["Annotations/1.xml: <bndbox/xmin> is not a number: 'ten'"]),
    ("yolo_zero_width", lambda r, s: yolo_folder(r, s, {"3": "0 0.5 0.5 0.4 0.4\n1 0.5 0.5 0 0.2\n"}),
     ["labels/train/3.txt:2: the box has zero width or height"]),
    ("yolo_latin1_label", lambda r, s: yolo_folder(r, s, {"2": "0 0.5 0.5 0.4 0.4 # caf\xe9\n".encode("latin-1")}),
     ["labels/train/2.txt: not UTF-8 text"]),
]


@pytest.mark.parametrize("name, make, words", VOC_YOLO_CASES, ids=[c[0] for c in VOC_YOLO_CASES])
def test_voc_and_yolo_problems_are_named_at_their_label_file(name, make, words, tmp_path, capsys):
    split = base_split(tmp_path / "corpus")
    folder = make(tmp_path / "labelled", split)
    out = tmp_path / "coco.json"
    out.write_text("an earlier conversion")
    fails(["convert-data", str(folder), "--out", str(out)])
    error_line(capsys, *words)
    assert out.read_text() == "an earlier conversion"
    fails(["train", "--data", str(folder), "--model", MODEL, "--run-dir", str(tmp_path / "run"), *TINY[2:]])
    error_line(capsys, *words)


def test_a_voc_box_outside_its_image_is_reported_against_the_xml(tmp_path, capsys):
    split = base_split(tmp_path / "corpus")
    folder = voc_folder(tmp_path / "voc", split, {2: [("b", 200, 10, 220, 40)]})  # image 3 is 128 wide
    fails(["train", "--data", str(folder), "--model", MODEL, "--run-dir", str(tmp_path / "run"), *TINY[2:]])
    error_line(capsys, f"{folder / 'Annotations/3.xml'} (object 0) (annotation 5, image 3): bbox",
               "lies outside the 128x96 image")


# ----------------------------------------------------------------------------- video

def test_a_truncated_video_is_predicted_as_far_as_it_decodes_with_a_warning(run_copy, tmp_path):
    import subprocess
    import sys

    import cv2

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 96))
    for i in range(20):
        writer.write(picture(96, 128, seed=i))
    writer.release()
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    out = tmp_path / "pred"
    result = subprocess.run([sys.executable, "-m", "centernet", "predict", str(video), "--weights",
                             str(run_copy / "best.pt"), "--device", "cpu", "--quiet", "--out", str(out)],
                            capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr
    records = json.loads((out / "clip.json").read_text())
    warned = [line for line in result.stderr.splitlines() if "warning" in line]  # (OpenCV's decoder says more)
    assert len(warned) == 1 and warned[0].startswith(f"centernet predict: warning: {video}: "), result.stderr
    assert f"only {len(records)} of the 20 frames" in warned[0] and 0 < len(records) < 20
    assert (out / "clip.avi").is_file() and not [p for p in out.iterdir() if ".tmp" in p.name]


def test_a_damaged_video_keeps_the_previous_outputs(run_copy, tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    out = run_copy / "predictions"
    before = fingerprint(run_copy)
    fails(["predict", str(video), "--weights", str(run_copy / "best.pt"), "--device", "cpu", "--quiet",
           "--out", str(out)])
    error_line(capsys, video, "not a readable video")
    assert fingerprint(run_copy) == before


# ----------------------------------------------------------------------------- export

def test_export_of_a_checkpoint_takes_its_input_size_and_eval_mode(trained, tmp_path, capsys):
    """The corpus run was trained and validated at 64x64, resized: the exported graph is that
    detector, by default and with --dynamic; its detections equal PyTorch's on the same images."""
    pytest.importorskip("onnxruntime")
    from centernet.data.transforms import EvalTransform
    from centernet.engine.predict import Detector
    from centernet.export import OnnxDetector

    # the trained checkpoint, its weights made lively (a 1-epoch run's scores are near ties,
    # which float rounding reorders; everything else, config and class names included, is the run's)
    state = torch.load(trained / "best.pt", weights_only=True)
    detector = Detector.from_checkpoint(trained / "best.pt", device="cpu")
    images = [picture(96, 128, seed=i) for i in range(1, 4)]
    model = lively(detector.model, torch.stack([torch.as_tensor(detector.transform.at_scale(image)[0])
                                                for image in images]))
    state["model"], state["ema"] = model.state_dict(), None
    checkpoint = tmp_path / "best.pt"
    torch.save(state, checkpoint)
    reference = Detector.from_checkpoint(checkpoint, device="cpu", score_threshold=0.01)
    assert (reference.transform.input_size, reference.transform.keep_res) == ((64, 64), False)
    for flags, shape in (([], "64x64"), (["--dynamic"], "any HxW")):
        out = tmp_path / f"model{len(flags)}.onnx"
        assert main(["export", "--weights", str(checkpoint), "--out", str(out), *flags]) == 0
        printed = capsys.readouterr().out
        assert "input size 64x64 (the checkpoint's); resized to the input size (as the checkpoint was validated)" \
            in printed and f"[B, 3, {shape}" in printed, printed
        exported = OnnxDetector(out, score_threshold=0.01)
        assert (exported.transform.input_size, exported.transform.keep_res) == ((64, 64), False)
        assert_same_results(exported.detect_images(images), reference.detect_images(images),
                            [image.shape[:2] for image in images])
    # a checkpoint validated at each image's own resolution exports a dynamic graph that keeps it
    # (its weights made lively at that resolution)
    keep_res = EvalTransform(input_size=(64, 64), keep_res=True)
    model = lively(model, torch.stack([torch.as_tensor(keep_res.at_scale(image)[0]) for image in images]))
    state["config"]["data"]["eval_keep_res"], state["model"] = True, model.state_dict()
    torch.save(state, checkpoint)
    assert main(["export", "--weights", str(checkpoint), "--out", str(tmp_path / "keep.onnx")]) == 0
    assert "each image at its own resolution (as the checkpoint was validated)" in capsys.readouterr().out
    exported = OnnxDetector(tmp_path / "keep.onnx", score_threshold=0.01)
    reference = Detector.from_checkpoint(checkpoint, device="cpu", score_threshold=0.01)
    assert exported.transform.keep_res and exported.dynamic_size
    assert_same_results(exported.detect_images(images), reference.detect_images(images),
                        [image.shape[:2] for image in images])
