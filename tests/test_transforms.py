"""The CenterNet image pipeline: affine geometry, box placement, normalisation, eval sizes."""

import numpy as np
import pytest

from centernet.data.transforms import (MEAN, STD, EvalTransform, TrainTransform, affine_points, denormalize,
                                       get_affine_transform)
from conftest import bright_extent, scene_with_rectangle

NO_BOXES = np.zeros((0, 4), np.float32)
NO_LABELS = np.zeros((0,), np.int64)


def expected_map(points, center, scale_w, output_size):
    """Independent form of the CenterNet affine: zoom output_w / scale_w about the centre."""
    output_w, output_h = output_size
    zoom = output_w / scale_w
    return (np.asarray(points, np.float64) - center) * zoom + (output_w / 2, output_h / 2)


@pytest.mark.parametrize("center, scale, output_size", [
    ((250.0, 187.0), 500.0, (512, 512)),
    ((3.5, 7.25), 37.0, (64, 96)),
    ((320.0, 100.0), np.array([544.0, 384.0]), (544, 384)),
])
def test_affine_maps_construction_points(center, scale, output_size):
    scale_w = float(np.atleast_1d(scale)[0])
    affine = get_affine_transform(center, scale, output_size)
    output_w, output_h = output_size
    construction = np.array([center, (center[0], center[1] - scale_w / 2),
                             (center[0] - scale_w / 2, center[1])])
    designed = np.array([(output_w / 2, output_h / 2), (output_w / 2, output_h / 2 - output_w / 2),
                         (0.0, output_h / 2)])
    np.testing.assert_allclose(affine_points(construction, affine), designed, atol=1e-3)
    points = np.random.default_rng(0).uniform(-100, 700, size=(50, 2))
    np.testing.assert_allclose(affine_points(points, affine),
                               expected_map(points, center, scale_w, output_size), rtol=1e-5, atol=1e-3)


def test_inverse_undoes_forward():
    rng = np.random.default_rng(1)
    for _ in range(20):
        center = rng.uniform(0, 600, 2)
        scale = rng.uniform(50, 900)
        output_size = tuple(rng.integers(32, 800, 2))
        forward = get_affine_transform(center, scale, output_size)
        inverse = get_affine_transform(center, scale, output_size, inverse=True)
        points = rng.uniform(-50, 900, size=(30, 2))
        np.testing.assert_allclose(affine_points(affine_points(points, forward), inverse), points, atol=2e-3)


def assert_box_on_pixels(image_chw, box, zoom):
    # Boxes share the image's affine (pixel-centre coordinates, as Paddle): source columns [a, b)
    # light input pixels from ceil(zoom * (a - 0.5) + t) to floor(zoom * (b - 0.5) + t), so the
    # lit extent differs from the box edge zoom * a + t by at most max(zoom / 2, 1 - zoom / 2).
    np.testing.assert_allclose(bright_extent(image_chw), box, atol=max(zoom / 2, 1 - zoom / 2) + 0.05)


@pytest.mark.parametrize("seed", range(6))
def test_train_box_lands_on_its_pixels_with_flip(seed):
    box = (70, 40, 190, 120)
    image = scene_with_rectangle(240, 320, box)
    transform = TrainTransform(input_size=(256, 320), flip_prob=1.0, color=False, lighting=False,
                               scale_choices=(0.9, 1.0, 1.1))
    rng = np.random.default_rng(seed)
    out, boxes, labels, inverse = transform(image, np.array([box], np.float32), np.array([3]), rng)
    assert out.shape == (3, 256, 320) and out.dtype == np.float32
    assert labels.tolist() == [3]
    zoom = 1.0 / abs(inverse[0, 0])
    assert_box_on_pixels(out, boxes[0], zoom)
    # flipped: the inverse affine maps the box back onto the mirrored original columns
    back = affine_points(boxes.reshape(2, 2), inverse).reshape(4)
    assert inverse[0, 0] < 0
    np.testing.assert_allclose(sorted(back[[0, 2]]), [box[0], box[2]], atol=1e-3)
    np.testing.assert_allclose(back[[1, 3]], [box[1], box[3]], atol=1e-3)


@pytest.mark.parametrize("keep_res, size", [(True, (250, 333)), (False, (250, 333)), (False, (400, 200))])
def test_eval_box_lands_on_its_pixels(keep_res, size):
    height, width = size
    box = (30, 50, 140, 190)
    image = scene_with_rectangle(height, width, box)
    out, boxes, _, inverse = EvalTransform(input_size=(384, 384), keep_res=keep_res)(
        image, np.array([box], np.float32), np.array([0]))
    zoom = 1.0 / inverse[0, 0]
    assert_box_on_pixels(out, boxes[0], zoom)
    back = affine_points(boxes.reshape(2, 2), inverse).reshape(4)
    np.testing.assert_allclose(back, box, atol=1e-3)


def test_normalisation_is_bgr_mean_std():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(64, 96, 3), dtype=np.uint8)  # keep_res: 96 x 128 canvas
    out, _, _, inverse = EvalTransform(keep_res=True)(image, NO_BOXES, NO_LABELS)
    assert out.shape == (3, 96, 128)
    dx, dy = -inverse[0, 2], -inverse[1, 2]  # integer placement of the image in the canvas
    assert (dx, dy) == (128 // 2 - 96 // 2, 96 // 2 - 64 // 2)
    inner = out[:, int(dy):int(dy) + 64, int(dx):int(dx) + 96]
    bgr = image[:, :, ::-1].astype(np.float64) / 255.0
    expected = ((bgr - MEAN.astype(np.float64)) / STD.astype(np.float64)).transpose(2, 0, 1)
    np.testing.assert_allclose(inner, expected, atol=1e-5)
    np.testing.assert_allclose(out[:, 0, 0], -MEAN / STD, atol=1e-6)  # the padding is black
    np.testing.assert_array_equal(denormalize(inner), image)


@pytest.mark.parametrize("side, padded", [(1, 32), (31, 32), (32, 64), (333, 352), (500, 512), (512, 544)])
def test_eval_keep_res_output_size_rule(side, padded):
    image = np.zeros((side, 50, 3), np.uint8)
    out, _, _, _ = EvalTransform(keep_res=True)(image, NO_BOXES, NO_LABELS)
    assert out.shape == (3, padded, 64)


def test_eval_fixed_size_keeps_aspect():
    image = np.zeros((300, 600, 3), np.uint8)
    out, boxes, _, _ = EvalTransform(input_size=(512, 512), keep_res=False)(
        image, np.array([[0, 0, 600, 300]], np.float32), np.array([1]))
    assert out.shape == (3, 512, 512)
    np.testing.assert_allclose(boxes[0], [0, 128, 512, 384], atol=1e-3)


def test_train_is_reproducible_and_boxes_are_clipped_not_dropped():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    boxes = np.array([[-20, -10, 420, 330], [5, 5, 5, 50]], np.float32)  # oversize, and empty
    transform = TrainTransform(input_size=(256, 256))
    first = transform(image, boxes, np.array([0, 1]), np.random.default_rng(7))
    second = transform(image, boxes, np.array([0, 1]), np.random.default_rng(7))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    out_boxes = first[1]
    assert out_boxes.shape == (2, 4)
    assert (out_boxes >= 0).all() and (out_boxes <= 256).all()
    assert out_boxes[1, 2] - out_boxes[1, 0] == 0  # still empty, still there


def test_colour_jitter_keeps_gray_gray_and_lighting_shifts_channels():
    image = np.tile(np.linspace(20, 230, 128, dtype=np.uint8)[None, :, None], (96, 1, 3))
    plain = TrainTransform(input_size=(128, 128), color=False, lighting=False)
    jitter = TrainTransform(input_size=(128, 128), color=True, lighting=False)
    light = TrainTransform(input_size=(128, 128), color=False, lighting=True)
    base = plain(image, NO_BOXES, NO_LABELS, np.random.default_rng(5))[0]
    jittered = jitter(image, NO_BOXES, NO_LABELS, np.random.default_rng(5))[0]
    lit = light(image, NO_BOXES, NO_LABELS, np.random.default_rng(5))[0]
    bgr = jittered * STD[:, None, None] + MEAN[:, None, None]
    np.testing.assert_allclose(bgr[0], bgr[1], atol=1e-5)  # saturation blends with gray: stays gray
    np.testing.assert_allclose(bgr[1], bgr[2], atol=1e-5)
    assert not np.allclose(jittered, base)
    shift = (lit - base) * STD[:, None, None]  # lighting: one constant per channel
    assert np.ptp(shift.reshape(3, -1), axis=1).max() < 1e-5
    assert 0 < np.abs(shift[:, 0, 0]).max() < 0.2


def test_bad_image_is_refused():
    with pytest.raises(ValueError, match="RGB uint8"):
        EvalTransform()(np.zeros((10, 10), np.uint8), NO_BOXES, NO_LABELS)
    with pytest.raises(ValueError, match="RGB uint8"):
        EvalTransform()(np.zeros((10, 10, 3), np.float32), NO_BOXES, NO_LABELS)
