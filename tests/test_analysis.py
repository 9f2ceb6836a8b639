"""The end-of-training analysis on hand-made ground truth and detections: per-class AP against
direct computations and COCOeval's own AP, the confusion matrix cell by cell, the files."""

import csv
import math

import numpy as np
import pytest

from centernet.data.coco import coco_from_dict
from centernet.engine.analysis import ANALYSIS_FILES, analyze, confusion_matrix, mean_row, per_class_ap
from centernet.engine.evaluate import coco_metrics, run_cocoeval

# category ids out of order and not contiguous: labels follow the id order (cat 5 -> 0, dog 9 -> 1)
CATEGORIES = [{"id": 9, "name": "dog"}, {"id": 5, "name": "cat"}]


def ground_truth(boxes_per_image: list[list[tuple[int, list[float]]]], categories=CATEGORIES):
    """A pycocotools COCO of images 1.. with (category id, xywh) boxes."""
    images = [{"id": i + 1, "file_name": f"{i}.jpg", "width": 400, "height": 400} for i in range(len(boxes_per_image))]
    pairs = [(image_id, cat_id, bbox) for image_id, boxes in enumerate(boxes_per_image, start=1) for cat_id, bbox in boxes]
    annotations = [{"id": i + 1, "image_id": image_id, "category_id": cat_id, "bbox": bbox,
                    "area": bbox[2] * bbox[3], "iscrowd": 0} for i, (image_id, cat_id, bbox) in enumerate(pairs)]
    return coco_from_dict({"images": images, "annotations": annotations, "categories": list(categories)})


def detection(image_id, cat_id, bbox, score):
    return {"image_id": image_id, "category_id": cat_id, "bbox": bbox, "score": score}


def test_a_perfect_class_scores_one_and_an_undetected_class_zero():
    gt = ground_truth([[(5, [10, 10, 50, 40]), (9, [200, 200, 60, 60])],
                       [(5, [30, 60, 80, 80]), (9, [100, 20, 40, 90])]])
    detections = [detection(1, 5, [10, 10, 50, 40], 0.9), detection(2, 5, [30, 60, 80, 80], 0.8)]
    rows = per_class_ap(run_cocoeval(gt, detections))
    assert [(row["class"], row["instances"], row["AP"], row["AP50"]) for row in rows] == [
        ("cat", 2, 1.0, 1.0), ("dog", 2, 0.0, 0.0)]
    assert mean_row(rows)["AP"] == pytest.approx(coco_metrics(gt, detections)["AP"]) == pytest.approx(0.5)


def test_no_detection_at_all_scores_zero_per_class():
    gt = ground_truth([[(5, [10, 10, 50, 40]), (9, [200, 200, 60, 60])]])
    rows = per_class_ap(run_cocoeval(gt, []))
    assert [(row["AP"], row["AP50"]) for row in rows] == [(0.0, 0.0), (0.0, 0.0)]


def test_mean_of_class_ap_is_cocoeval_ap_and_a_class_without_ground_truth_is_left_out():
    rng = np.random.default_rng(0)
    categories = [*CATEGORIES, {"id": 11, "name": "bird"}]  # no box of bird anywhere
    boxes = [[(int(rng.choice([5, 9])), [float(v) for v in (*rng.uniform(0, 250, 2), *rng.uniform(20, 120, 2))])
              for _ in range(4)] for _ in range(6)]
    gt = ground_truth(boxes, categories)
    detections = []
    for image_id, image_boxes in enumerate(boxes, start=1):
        for cat_id, (x, y, w, h) in image_boxes:
            jitter = rng.normal(0, 6, 4)
            wrong = rng.uniform() < 0.2  # some detections get the other class or a made-up one
            detections.append(detection(image_id, int(rng.choice([5, 9, 11])) if wrong else cat_id,
                                        [x + jitter[0], y + jitter[1], w + abs(jitter[2]), h + abs(jitter[3])],
                                        float(rng.uniform(0.05, 1))))
    rows = per_class_ap(run_cocoeval(gt, detections))
    assert math.isnan(rows[2]["AP"]) and rows[2]["class"] == "bird"
    assert 0 < rows[0]["AP"] < 1 and 0 < rows[1]["AP"] < 1
    metrics = coco_metrics(gt, detections)
    assert mean_row(rows)["AP"] == pytest.approx(metrics["AP"], abs=1e-12)
    assert mean_row(rows)["AP50"] == pytest.approx(metrics["AP50"], abs=1e-12)


def handmade_case():
    """Rows predicted, columns true, in label order (cat, dog, background)."""
    gt = ground_truth([
        [(5, [10, 10, 100, 100]), (9, [200, 200, 80, 80])],
        [(9, [20, 20, 60, 60]), (5, [250, 250, 50, 50])],
    ])
    detections = [
        detection(1, 9, [15, 15, 100, 100], 0.6),    # a second, worse box on image 1's cat: false positive
        detection(1, 5, [10, 10, 100, 100], 0.9),    # image 1's cat, right: (cat, cat)
        detection(1, 5, [202, 198, 80, 80], 0.7),    # image 1's dog called cat: (cat, dog)
        detection(2, 9, [300, 20, 40, 40], 0.8),     # nothing there: (dog, background)
        detection(2, 9, [20, 20, 60, 60], 0.1),      # image 2's dog, but below the score threshold: a miss
        detection(2, 5, [250, 250, 50, 20], 0.95),   # IoU 0.4 with image 2's cat: a miss and a false positive
    ]
    expected = np.array([[1, 1, 1],   # predicted cat: the right one, the dog, the flat box
                         [0, 0, 2],   # predicted dog: the duplicate and the empty spot
                         [1, 1, 0]])  # misses: image 2's cat and dog
    return gt, detections, expected


def test_confusion_matrix_counts_right_wrong_class_miss_and_false_positive():
    gt, detections, expected = handmade_case()
    np.testing.assert_array_equal(confusion_matrix(gt, detections, score_threshold=0.3), expected)
    # with every score counted, the low-score dog on image 2 turns its miss into a right detection
    low = expected.copy()
    low[1, 1], low[2, 1] = 1, 0
    np.testing.assert_array_equal(confusion_matrix(gt, detections, score_threshold=0.0), low)


def test_analyze_writes_the_files_and_a_table(tmp_path):
    gt, detections, expected = handmade_case()
    table = analyze(gt, detections, tmp_path)
    assert all((tmp_path / name).is_file() for name in ANALYSIS_FILES)
    with open(tmp_path / "confusion_matrix.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["predicted \\ true", "cat", "dog", "background"]
    assert [row[0] for row in rows[1:]] == ["cat", "dog", "background"]
    np.testing.assert_array_equal(np.array([row[1:] for row in rows[1:]], int), expected)
    with open(tmp_path / "per_class_ap.csv", newline="") as handle:
        ap_rows = list(csv.DictReader(handle))
    assert [row["class"] for row in ap_rows] == ["cat", "dog", "all"]
    rows = per_class_ap(run_cocoeval(gt, detections))
    for written, row in zip(ap_rows, [*rows, mean_row(rows)]):
        assert float(written["AP"]) == pytest.approx(row["AP"], rel=1e-5)
        assert float(written["AP50"]) == pytest.approx(row["AP50"], rel=1e-5)
    assert float(ap_rows[2]["AP"]) == pytest.approx(coco_metrics(gt, detections)["AP"], rel=1e-5)
    lines = table.splitlines()
    assert lines[0].split() == ["class", "instances", "AP", "AP50"]
    assert lines[1].split()[:2] == ["cat", "2"] and lines[-1].split()[0] == "all"
    assert float(lines[1].split()[2]) == pytest.approx(100 * rows[0]["AP"], abs=0.006)
