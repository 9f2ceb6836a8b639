"""Pascal VOC XML and YOLO txt folders: round trips through COCO, clear errors, convert-data and train."""

import json
import shutil

import numpy as np
import pytest

from centernet.cli import main
from centernet.data.coco import CocoDetection, read_coco_json
from centernet.data.convert import detect_format, read_dataset
from centernet.data.errors import DataError
from centernet.data.synthetic import generate_dataset
from centernet.data.voc import read_voc, write_voc
from centernet.data.yolo import read_yolo, write_yolo


@pytest.fixture(scope="module")
def coco_split(tmp_path_factory):
    """A small generated COCO split: (image_dir, its dict)."""
    root = tmp_path_factory.mktemp("synth")
    paths = generate_dataset(root, num_train=6, num_val=3, seed=1, min_side=64, max_side=128, max_objects=5)
    return paths["train_images"], read_coco_json(paths["train_ann"])


def boxes_by_file(data):
    """file_name -> sorted list of (class name, x0, y0, x1, y1), independent of ids."""
    name_of = {c["id"]: c["name"] for c in data["categories"]}
    file_of = {image["id"]: image["file_name"] for image in data["images"]}
    out = {name: [] for name in file_of.values()}
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        out[file_of[ann["image_id"]]].append((name_of[ann["category_id"]], x, y, x + w, y + h))
    return {name: sorted(boxes) for name, boxes in out.items()}


def assert_same_boxes(expected, actual, atol):
    assert expected.keys() == actual.keys()
    for name in expected:
        assert [b[0] for b in expected[name]] == [b[0] for b in actual[name]], name
        np.testing.assert_allclose([b[1:] for b in actual[name]], [b[1:] for b in expected[name]], atol=atol)


def make_yolo(tmp_path, coco_split):
    """The split as a YOLO folder with the same images and labels in images|labels/train and /val."""
    image_dir, data = coco_split
    write_yolo(data, tmp_path / "flat")
    root = tmp_path / "yolo"
    for split in ("train", "val"):
        shutil.copytree(image_dir, root / "images" / split)
        shutil.copytree(tmp_path / "flat" / "labels", root / "labels" / split)
    shutil.copy(tmp_path / "flat" / "classes.txt", root)
    return root


def test_voc_round_trip_keeps_every_box(tmp_path, coco_split):
    _, data = coco_split
    assert data["annotations"], "the generated split should have boxes"
    write_voc(data, tmp_path / "voc")
    back, image_dir = read_voc(tmp_path / "voc")
    assert image_dir == tmp_path / "voc" / "JPEGImages"
    assert [c["name"] for c in back["categories"]] == [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]
    assert {(i["file_name"], i["width"], i["height"]) for i in back["images"]} == \
           {(i["file_name"], i["width"], i["height"]) for i in data["images"]}
    assert_same_boxes(boxes_by_file(data), boxes_by_file(back), atol=0)


def test_voc_pixel_convention_matches_paddle_x2coco(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><size><width>50</width><height>40</height></size>"
        "<object><name>dog</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>20</ymax></bndbox>"
        "</object></annotation>")
    data, _ = read_voc(tmp_path)
    assert data["annotations"][0]["bbox"] == [0, 1, 10, 19]  # xmin-1, ymin-1, xmax-xmin+1, ymax-ymin+1


def test_yolo_round_trip_keeps_boxes_within_rounding(tmp_path, coco_split):
    _, data = coco_split
    root = make_yolo(tmp_path, coco_split)
    assert detect_format(root) == "yolo"
    back, image_dir = read_yolo(root, split="train")
    assert image_dir == root / "images" / "train"
    assert {(i["file_name"], i["width"], i["height"]) for i in back["images"]} == \
           {(i["file_name"], i["width"], i["height"]) for i in data["images"]}
    # 6 decimals of a fraction of <= 128 pixels: well under 1e-3 pixel
    assert_same_boxes(boxes_by_file(data), boxes_by_file(back), atol=1e-3)


def test_convert_data_cli_writes_a_coco_file_the_dataset_reads(tmp_path, coco_split, capsys):
    image_dir, data = coco_split
    write_voc(data, tmp_path / "voc")
    shutil.copytree(image_dir, tmp_path / "voc" / "JPEGImages")
    out = tmp_path / "ann.json"
    assert main(["convert-data", str(tmp_path / "voc"), "--out", str(out)]) == 0
    assert "JPEGImages" in capsys.readouterr().out
    assert_same_boxes(boxes_by_file(data), boxes_by_file(json.loads(out.read_text())), atol=0)
    from centernet.data.transforms import EvalTransform
    dataset = CocoDetection(tmp_path / "voc" / "JPEGImages", out, EvalTransform(input_size=(64, 64)))
    dataset.check_files()
    assert dataset.class_names == [c["name"] for c in data["categories"]]


def test_train_on_a_yolo_folder(tmp_path, coco_split):
    root = make_yolo(tmp_path, coco_split)
    run = tmp_path / "run"
    assert main(["train", "--data", str(root), "--model", "centernet_mbv3_small", "--input-size", "64",
                 "--epochs", "1", "--batch-size", "3", "--workers", "0", "--run-dir", str(run),
                 "--no-eval-keep-res", "--device", "cpu", "--quiet"]) == 0
    assert (run / "best.pt").is_file()
    assert read_coco_json(run / "data" / "train.json")["images"]  # the converted split is kept in the run


# -- errors name the file (and line) ---------------------------------------------------------------

def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


VOC_OBJECT = "<object><name>{}</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
VOC_SIZE = "<size><width>10</width><height>10</height></size>"


@pytest.mark.parametrize("xml, labels, message", [
    ("<annotation><size>", None, "malformed XML"),
    (f"<annotation>{VOC_OBJECT.format('cat')}</annotation>", None, "missing <size/width>"),
    (f"<annotation>{VOC_SIZE}{VOC_OBJECT.format('cat')}</annotation>", "dog\n", "unknown class 'cat'"),
    (f"<annotation>{VOC_SIZE}{VOC_OBJECT.format('cat').replace('<xmax>5', '<xmax>five')}</annotation>", None,
     "<bndbox/xmax> is not a number"),
])
def test_voc_errors_name_the_file(tmp_path, xml, labels, message):
    bad = write(tmp_path / "Annotations" / "bad.xml", xml)
    if labels:
        write(tmp_path / "labels.txt", labels)
    with pytest.raises(DataError) as error:
        read_voc(tmp_path)
    assert str(bad) in str(error.value) and message in str(error.value)


@pytest.mark.parametrize("line, message", [
    ("0 0.5 0.5 0.2", "expected 5 fields"),
    ("0 0.5 0.5 0.2 0.2 0.1", "expected 5 fields"),
    ("0 0.5 1.2 0.2 0.2", "normalised to [0, 1]"),
    ("0 -0.1 0.5 0.2 0.2", "normalised to [0, 1]"),
    ("3 0.5 0.5 0.2 0.2", "unknown class index 3"),
    ("a 0.5 0.5 0.2 0.2", "not numbers"),
])
def test_yolo_errors_name_the_file_and_line(tmp_path, coco_split, line, message):
    image_dir, _ = coco_split
    (tmp_path / "images").mkdir()
    shutil.copy(next(image_dir.glob("*.jpg")), tmp_path / "images" / "a.jpg")
    write(tmp_path / "classes.txt", "x\ny\nz\n")
    bad = write(tmp_path / "labels" / "a.txt", f"1 0.5 0.5 0.1 0.1\n{line}\n")
    with pytest.raises(DataError) as error:
        read_dataset(tmp_path)
    assert f"{bad}:2" in str(error.value) and message in str(error.value)


def test_yolo_names_from_data_yaml_and_missing_names(tmp_path, coco_split):
    image_dir, _ = coco_split
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    shutil.copy(next(image_dir.glob("*.jpg")), tmp_path / "images" / "a.jpg")
    with pytest.raises(DataError, match="no class names"):
        read_yolo(tmp_path)
    write(tmp_path / "data.yaml", "names: {0: person, 1: car}\n")
    data, _ = read_yolo(tmp_path)
    assert [c["name"] for c in data["categories"]] == ["person", "car"]
    assert data["annotations"] == []  # no label file: a negative image


def test_not_a_known_layout_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="neither a VOC folder"):
        read_dataset(tmp_path)
    assert main(["convert-data", str(tmp_path), "--out", str(tmp_path / "a.json")]) == 2
