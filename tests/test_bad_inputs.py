"""The bad-input corpus: files, flags and faults a user really meets, made here, through the
commands (check-data, train, eval, predict, export, convert, convert-data, synth).

The rule every case holds the code to: a user's mistake or a fault (full disk, Ctrl-C) gets ONE
line on stderr naming the file or the flag and the problem, a non-zero exit code, and outputs
written before (checkpoints, eval.json, detections.json, predictions.json, drawn images, exported
graphs) come out byte-identical; or the documented recovery (odd but valid images load; training
clips boxes reaching outside the image; ``--skip-bad-data`` leaves bad entries out with a count; a
truncated video is predicted as far as it decodes, with a warning).
"""

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from centernet.cli import main
from centernet.data.check import check_split

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
