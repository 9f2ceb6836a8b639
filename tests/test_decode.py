"""decode / flip_merge / affine_boxes against hand results, numpy, onnxruntime and the targets."""

import io
import math

import numpy as np
import pytest
import torch

from centernet.decode import affine_boxes, decode, flip_merge
from centernet.targets import build_targets


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def two_peak_maps():
    """Class 0 peak at (x 2, y 3) with a weaker neighbour at (3, 3); class 2 peak at (6, 5)."""
    heatmap = torch.full((1, 3, 8, 8), -10.0)
    heatmap[0, 0, 3, 2] = 2.0
    heatmap[0, 0, 3, 3] = 1.0  # not a local maximum: must be suppressed
    heatmap[0, 2, 5, 6] = 0.5
    wh = torch.zeros(1, 2, 8, 8)
    offset = torch.zeros(1, 2, 8, 8)
    wh[0, :, 3, 2] = torch.tensor([4.0, 2.0])
    offset[0, :, 3, 2] = torch.tensor([0.25, 0.5])
    wh[0, :, 3, 3] = torch.tensor([9.0, 9.0])
    wh[0, :, 5, 6] = torch.tensor([1.0, 3.0])
    offset[0, :, 5, 6] = torch.tensor([0.75, 0.0])
    return heatmap, wh, offset


def test_decode_two_peaks_by_hand():
    boxes, scores, labels = decode(*two_peak_maps(), k=3)
    assert boxes.shape == (1, 3, 4) and scores.shape == (1, 3) and labels.dtype == torch.int64
    # center (2.25, 3.5) size (4, 2); center (6.75, 5.0) size (1, 3)
    torch.testing.assert_close(boxes[0, :2], torch.tensor([[0.25, 2.5, 4.25, 4.5], [6.25, 3.5, 7.25, 6.5]]))
    torch.testing.assert_close(scores[0, :2], torch.tensor([sigmoid(2.0), sigmoid(0.5)]))
    assert labels[0, :2].tolist() == [0, 2]
    assert scores[0, 2] == pytest.approx(sigmoid(-10.0))  # next is background, not the neighbour at 1.0


def test_decode_of_probabilities_and_of_a_batch():
    heatmap, wh, offset = two_peak_maps()
    flipped = heatmap.flip(-1)
    batch = decode(torch.cat([heatmap, flipped]).sigmoid(), wh.expand(2, -1, -1, -1),
                   offset.expand(2, -1, -1, -1), k=2, apply_sigmoid=False)
    single = decode(heatmap, wh, offset, k=2)
    for batched, alone in zip(batch, single):
        torch.testing.assert_close(batched[:1], alone)
    # the mirrored class 0 peak sits at x = 7 - 2 = 5, where wh and offset are zero: a point box
    assert batch[2][1].tolist() == [0, 2]
    assert batch[0][1, 0].tolist() == [5.0, 3.0, 5.0, 3.0]


def test_k_is_clamped_to_the_number_of_positions():
    boxes, scores, labels = decode(torch.randn(1, 2, 2, 2), torch.rand(1, 2, 2, 2), torch.rand(1, 2, 2, 2), k=100)
    assert boxes.shape == (1, 8, 4) and scores.shape == (1, 8) and labels.shape == (1, 8)


def paddle_style_topk(scores: np.ndarray, k: int):
    """PaddleDetection's two-stage top-K (per class, then over the survivors), in numpy, one image."""
    num_classes, height, width = scores.shape
    per_class = scores.reshape(num_classes, -1)
    class_index = np.argsort(-per_class, axis=1)[:, :k]  # [C, k]
    class_scores = np.take_along_axis(per_class, class_index, axis=1)
    best = np.argsort(-class_scores.ravel())[:k]
    return class_scores.ravel()[best], best // k, class_index.ravel()[best]


def test_decode_topk_equals_paddles_two_stage_topk():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 4, 9, 7)).astype(np.float32)
    heatmap = torch.from_numpy(logits)
    _, scores, labels = decode(heatmap, torch.zeros(1, 2, 9, 7), torch.zeros(1, 2, 9, 7), k=10)
    probs = 1 / (1 + np.exp(-logits[0]))
    padded = np.pad(probs, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    window_max = np.max([padded[:, dy:dy + 9, dx:dx + 7] for dy in range(3) for dx in range(3)], axis=0)
    peaks = np.where(probs == window_max, probs, 0)
    expected_scores, expected_labels, _ = paddle_style_topk(peaks, 10)
    np.testing.assert_allclose(scores[0].numpy(), expected_scores, rtol=1e-6)
    np.testing.assert_array_equal(labels[0].numpy(), expected_labels)


def test_flip_merge_by_hand():
    rng = np.random.default_rng(1)
    maps = {name: rng.normal(size=(1, channels, 3, 4)).astype(np.float32)
            for name, channels in (("heatmap", 2), ("wh", 2), ("offset", 2))}
    mirror = {name: rng.normal(size=value.shape).astype(np.float32) for name, value in maps.items()}
    merged = flip_merge({k: torch.from_numpy(v) for k, v in maps.items()},
                        {k: torch.from_numpy(v) for k, v in mirror.items()})
    expected_prob = (1 / (1 + np.exp(-maps["heatmap"])) + 1 / (1 + np.exp(-mirror["heatmap"][..., ::-1]))) / 2
    np.testing.assert_allclose(merged["heatmap"].sigmoid().numpy(), expected_prob, rtol=1e-5)
    np.testing.assert_allclose(merged["wh"].numpy(), (maps["wh"] + mirror["wh"][..., ::-1]) / 2, rtol=1e-6)
    np.testing.assert_array_equal(merged["offset"].numpy(), maps["offset"])


def test_flip_merge_of_a_mirror_image_pair_changes_nothing_and_stays_finite():
    heatmap = torch.tensor([[[[-200.0, 0.0, 3.0, 200.0]]]])
    wh = torch.tensor([[[[1.0, 2.0, 3.0, 4.0]], [[5.0, 6.0, 7.0, 8.0]]]])
    outputs = {"heatmap": heatmap, "wh": wh, "offset": torch.zeros(1, 2, 1, 4)}
    mirrored = {k: v.flip(-1) for k, v in outputs.items()}
    merged = flip_merge(outputs, mirrored)
    assert torch.isfinite(merged["heatmap"]).all()
    torch.testing.assert_close(merged["heatmap"], heatmap)
    torch.testing.assert_close(merged["wh"], wh)


def test_affine_boxes_matches_a_numpy_matmul():
    rng = np.random.default_rng(2)
    xy1 = rng.uniform(0, 50, size=(2, 5, 2))
    boxes = np.concatenate([xy1, xy1 + rng.uniform(1, 30, size=(2, 5, 2))], axis=-1).astype(np.float32)
    matrix = np.array([[[2.0, 0, 10], [0, 2.0, -5]], [[0.5, 0, 3], [0, 0.25, 7]]], np.float32)
    expected = np.empty_like(boxes)
    for b in range(2):
        for corner in (slice(0, 2), slice(2, 4)):
            points = np.concatenate([boxes[b, :, corner], np.ones((5, 1), np.float32)], axis=1)  # [K, 3]
            expected[b, :, corner] = points @ matrix[b].T
    result = affine_boxes(torch.from_numpy(boxes), torch.from_numpy(matrix))
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-6)


def test_affine_boxes_with_a_mirroring_matrix_keeps_corners_ordered():
    boxes = torch.tensor([[[1.0, 2.0, 4.0, 8.0]]])
    mirror = torch.tensor([[[-1.0, 0.0, 10.0], [0.0, 1.0, 0.0]]])
    torch.testing.assert_close(affine_boxes(boxes, mirror), torch.tensor([[[6.0, 2.0, 9.0, 8.0]]]))


class DecodeModule(torch.nn.Module):
    def forward(self, heatmap, wh, offset):
        return decode(heatmap, wh, offset, k=20)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter announces its successor
def test_decode_exported_to_onnx_matches_in_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    names = ["heatmap", "wh", "offset"]
    dynamic = {name: {0: "batch", 2: "height", 3: "width"} for name in names}
    buffer = io.BytesIO()
    example = (torch.randn(1, 3, 16, 16), torch.rand(1, 2, 16, 16), torch.rand(1, 2, 16, 16))
    torch.onnx.export(DecodeModule(), example, buffer, dynamo=False, opset_version=17, input_names=names,
                      output_names=["boxes", "scores", "labels"], dynamic_axes=dynamic)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    for batch, height, width in [(1, 16, 16), (2, 12, 20), (1, 2, 3)]:  # 3 * 2 * 3 = 18 < k
        inputs = (torch.randn(batch, 3, height, width, generator=generator),
                  torch.rand(batch, 2, height, width, generator=generator) * 8,
                  torch.rand(batch, 2, height, width, generator=generator))
        boxes, scores, labels = session.run(None, {name: t.numpy() for name, t in zip(names, inputs)})
        expected = decode(*inputs, k=20)
        assert boxes.shape == (batch, min(20, 3 * height * width), 4)
        np.testing.assert_allclose(scores, expected[1].numpy(), rtol=1e-6)
        peaks = expected[1].numpy() > 0  # suppressed positions all score 0 and tie in any order
        np.testing.assert_allclose(boxes[peaks], expected[0].numpy()[peaks], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(labels[peaks], expected[2].numpy()[peaks])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    area = lambda boxes: np.prod(boxes[:, 2:] - boxes[:, :2], axis=-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_targets_then_decode_recovers_the_boxes(seed):
    rng = np.random.default_rng(seed)
    size, stride, num_classes = 128, 4, 3
    boxes, centers = [[0.0, 0.0, 7.0, 6.0]], {(0, 0)}  # one centre in cell (0, 0), where empty slots point
    while len(boxes) < 12:  # random boxes inside the image with distinct integer centers
        x1, y1 = rng.uniform(0, size - 20, size=2)
        x2, y2 = x1 + rng.uniform(4, size - 4 - x1), y1 + rng.uniform(4, size - 4 - y1)
        center = (int((x1 + x2) / 2 / stride), int((y1 + y2) / 2 / stride))
        if center not in centers:
            centers.add(center)
            boxes.append([x1, y1, x2, y2])
    boxes = np.array(boxes, np.float32)
    labels = rng.integers(0, num_classes, size=len(boxes))
    out = size // stride
    targets = build_targets(boxes, labels, num_classes, (out, out), stride=stride)

    heatmap = torch.logit(torch.from_numpy(targets["heatmap"]).clamp(1e-6, 1 - 1e-6))[None]
    wh, offset = torch.zeros(1, 2, out * out), torch.zeros(1, 2, out * out)
    filled = targets["mask"].astype(bool)  # the object slots; the rest are empty (index 0, zeros)
    assert filled.sum() == len(boxes)
    wh[0, :, targets["index"][filled]] = torch.from_numpy(targets["wh"][filled]).T
    offset[0, :, targets["index"][filled]] = torch.from_numpy(targets["offset"][filled]).T
    found, scores, found_labels = decode(heatmap, wh.view(1, 2, out, out), offset.view(1, 2, out, out),
                                         k=len(boxes))
    assert (scores > 0.99).all()
    ious = iou_matrix(boxes, found[0].numpy() * stride)
    best = ious.argmax(axis=1)
    assert (ious.max(axis=1) > 0.99).all()
    np.testing.assert_array_equal(found_labels[0].numpy()[best], labels)
