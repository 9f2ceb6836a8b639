"""Targets against hand computations: radius, gaussian values, index, offset, slots."""

import math

import numpy as np
import pytest

from centernet.targets import build_targets, draw_gaussian, gaussian_radius


def box_iou(a, b):
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_radius_of_a_2x3_box_by_hand():
    # height 2, width 3, min IoU 0.7; each case is a quadratic a r^2 - b r + c = 0
    # case 1: a = 1, b = 5, c = 6 * 0.3 / 1.7;  case 2: a = 4, b = 10, c = 0.3 * 6
    # case 3: a = 2.8, b = -7, c = -0.3 * 6 (the code's sign convention)
    disc1 = 25 - 4 * 1 * (6 * 0.3 / 1.7)
    disc2 = 100 - 4 * 4 * 1.8
    disc3 = 49 + 4 * 2.8 * 1.8
    quirk = min((5 + math.sqrt(disc1)) / 2, (10 + math.sqrt(disc2)) / 2, (-7 + math.sqrt(disc3)) / 2)
    correct = min((5 - math.sqrt(disc1)) / 2, (10 - math.sqrt(disc2)) / 8, (-7 + math.sqrt(disc3)) / 5.6)
    assert quirk == pytest.approx(0.6581245772583584)
    assert gaussian_radius(2, 3) == pytest.approx(quirk, rel=1e-12)
    assert gaussian_radius(2, 3, corrected=True) == pytest.approx(correct, rel=1e-12)
    assert gaussian_radius(2, 3, corrected=True) == pytest.approx(0.19524884451, rel=1e-9)


@pytest.mark.parametrize("height, width", [(2, 3), (10, 10), (7, 40), (128, 33)])
def test_corrected_radius_keeps_min_iou_in_all_three_layouts(height, width):
    r = gaussian_radius(height, width, corrected=True)
    box = (0, 0, width, height)
    ious = [
        box_iou(box, (r, r, width + r, height + r)),  # case 1: shifted, one corner in, one out
        box_iou(box, (r, r, width - r, height - r)),  # case 2: both corners inside
        box_iou(box, (-r, -r, width + r, height + r)),  # case 3: both corners outside
    ]
    assert min(ious) == pytest.approx(0.7, abs=1e-9)
    assert all(iou >= 0.7 - 1e-9 for iou in ious)


def test_quirky_radius_is_about_a_quarter_of_the_side_and_larger_than_corrected():
    sides = np.array([8.0, 32.0, 100.0])
    quirk = gaussian_radius(sides, sides)
    correct = gaussian_radius(sides, sides, corrected=True)
    assert quirk.shape == (3,)
    np.testing.assert_allclose(quirk / sides, 0.27, atol=0.01)
    np.testing.assert_allclose(correct / sides, 0.08, atol=0.01)
    assert (quirk > 2.5 * correct).all()


def test_draw_gaussian_values_by_hand():
    heatmap = np.zeros((10, 12), np.float32)
    draw_gaussian(heatmap, (5, 4), 2)
    sigma = 5 / 6
    assert heatmap[4, 5] == 1.0
    assert heatmap[4, 6] == pytest.approx(math.exp(-1 / (2 * sigma**2)), rel=1e-6)
    assert heatmap[6, 7] == pytest.approx(math.exp(-8 / (2 * sigma**2)), rel=1e-6)
    assert heatmap[2, 4] == pytest.approx(math.exp(-5 / (2 * sigma**2)), rel=1e-6)
    assert heatmap[4, 8] == 0 and heatmap[1, 5] == 0  # outside the 5x5 window
    assert np.count_nonzero(heatmap) == 25


def test_draw_gaussian_clips_at_the_border_and_keeps_the_max():
    heatmap = np.zeros((6, 6), np.float32)
    heatmap[1, 1] = 0.99
    heatmap[0, 2] = 0.01
    draw_gaussian(heatmap, (0, 0), 2)
    sigma = 5 / 6
    assert heatmap.shape == (6, 6)
    assert heatmap[0, 0] == 1.0
    assert heatmap[1, 1] == pytest.approx(0.99)  # higher than the gaussian there
    assert heatmap[0, 2] == pytest.approx(math.exp(-4 / (2 * sigma**2)), rel=1e-6)
    assert np.count_nonzero(heatmap) == 9  # only the in-map quarter of the window
    draw_gaussian(heatmap, (6, 0), 2)  # center outside: nothing drawn
    assert np.count_nonzero(heatmap) == 9


def test_build_targets_one_box_by_hand():
    # input pixels (4, 8, 45, 30) at stride 4 -> output (1, 2, 11.25, 7.5): w 10.25, h 5.5
    targets = build_targets(np.array([[4, 8, 45, 30]], np.float32), [1], num_classes=3, output_size=(16, 16))
    # radius from ceil(h) = 6, ceil(w) = 11: case 3 (a 2.8, b -23.8, c -19.8) is the smallest
    radius = int((-23.8 + math.sqrt(23.8**2 + 4 * 2.8 * 19.8)) / 2)
    assert radius == 2
    sigma = (2 * radius + 1) / 6
    heatmap = targets["heatmap"]
    assert heatmap.shape == (3, 16, 16) and heatmap.dtype == np.float32
    assert not heatmap[0].any() and not heatmap[2].any()
    # center (6.125, 4.75) -> integer (6, 4)
    assert heatmap[1, 4, 6] == 1.0 and heatmap[1].max() == 1.0
    assert heatmap[1, 5, 7] == pytest.approx(math.exp(-2 / (2 * sigma**2)), rel=1e-6)
    assert heatmap[1, 4, 9] == 0
    assert np.count_nonzero(heatmap[1]) == 25
    np.testing.assert_allclose(targets["wh"][0], [10.25, 5.5])
    np.testing.assert_allclose(targets["offset"][0], [0.125, 0.75])
    assert targets["index"][0] == 4 * 16 + 6
    assert targets["mask"][0] == 1 and not targets["mask"][1:].any()
    assert targets["wh"].shape == (128, 2) and targets["index"].dtype == np.int64
    assert targets["mask"].dtype == np.float32 and targets["offset"].dtype == np.float32


def test_build_targets_tiny_box_gets_radius_zero():
    # (8, 8, 20, 16) -> (2, 2, 5, 4): w 3, h 2, quirky radius 0.658 -> 0: one pixel
    targets = build_targets([[8, 8, 20, 16]], [0], num_classes=1, output_size=(8, 8))
    assert np.count_nonzero(targets["heatmap"]) == 1 and targets["heatmap"][0, 3, 3] == 1.0
    np.testing.assert_allclose(targets["offset"][0], [0.5, 0.0])
    np.testing.assert_allclose(targets["wh"][0], [3.0, 2.0])


def test_build_targets_clips_to_the_map_and_skips_degenerate_boxes_leaving_their_slot():
    boxes = np.array([
        [-20, -8, 12, 12],  # clipped to (0, 0, 3, 3) on the output map
        [80, 80, 100, 100],  # entirely outside: clipped to zero size, skipped
        [40, 40, 40, 52],  # zero width, skipped
        [36, 20, 60, 64],  # (9, 5, 15, 16) -> clipped to (9, 5, 15, 15)
    ], np.float32)
    targets = build_targets(boxes, [0, 1, 1, 1], num_classes=2, output_size=(16, 16))
    np.testing.assert_array_equal(targets["mask"][:5], [1, 0, 0, 1, 0])
    np.testing.assert_allclose(targets["wh"][0], [3, 3])
    np.testing.assert_allclose(targets["wh"][3], [6, 10])
    assert targets["index"][0] == 1 * 16 + 1
    assert targets["index"][3] == 10 * 16 + 12
    assert targets["index"][1] == 0 and not targets["wh"][1].any()
    assert targets["heatmap"][1].max() == 1.0 and np.count_nonzero(targets["heatmap"][1] == 1.0) == 1


def test_overlapping_same_class_gaussians_take_the_max():
    boxes = np.array([[8, 8, 48, 48], [20, 16, 60, 52]], np.float32)
    both = build_targets(boxes, [0, 0], num_classes=1, output_size=(16, 16))["heatmap"]
    first = build_targets(boxes[:1], [0], num_classes=1, output_size=(16, 16))["heatmap"]
    second = build_targets(boxes[1:], [0], num_classes=1, output_size=(16, 16))["heatmap"]
    assert (first * second > 0).any()  # they do overlap
    np.testing.assert_array_equal(both, np.maximum(first, second))


def test_corrected_radius_draws_a_smaller_gaussian():
    box = [[0, 0, 60, 60]]
    quirk = build_targets(box, [0], num_classes=1, output_size=(16, 16))["heatmap"]
    correct = build_targets(box, [0], num_classes=1, output_size=(16, 16), corrected_radius=True)["heatmap"]
    # side 15: quirky radius int(4.05) = 4 -> 9x9, corrected int(1.22) = 1 -> 3x3 window
    assert np.count_nonzero(quirk) == 81 and np.count_nonzero(correct) == 9


def test_only_the_first_max_objs_boxes_are_used():
    boxes = [[0, 0, 8, 8], [16, 16, 24, 24], [32, 32, 40, 40]]
    targets = build_targets(boxes, [0, 1, 2], num_classes=3, output_size=(16, 16), max_objs=2)
    assert targets["mask"].tolist() == [1, 1]
    assert targets["heatmap"][1].any() and not targets["heatmap"][2].any()


def test_no_boxes_gives_empty_targets():
    targets = build_targets(np.zeros((0, 4)), np.zeros((0,)), num_classes=2, output_size=(4, 6))
    assert targets["heatmap"].shape == (2, 4, 6) and not targets["heatmap"].any()
    assert not targets["mask"].any()


@pytest.mark.parametrize("boxes, labels, message", [
    (np.zeros((2, 3)), [0, 0], r"\[N, 4\]"),
    (np.zeros((2, 4)), [0], "2 boxes but 1 labels"),
    (np.array([[0, 0, 4, np.nan]]), [0], "NaN"),
    (np.array([[0, 0, 4, 4]]), [5], r"\[0, 3\)"),
])
def test_bad_input_is_refused_clearly(boxes, labels, message):
    with pytest.raises(ValueError, match=message):
        build_targets(boxes, labels, num_classes=3, output_size=(8, 8))
