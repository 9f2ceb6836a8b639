"""Multi-scale test (the original CenterNet's): inputs per scale, boxes back to the image, the merge."""

import json

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import box_iou

from centernet import create_model
from centernet.cli import main
from centernet.config import Config
from centernet.data.coco import CocoDetection
from centernet.data.transforms import EvalTransform, affine_points
from centernet.decode import affine_boxes, decode, flip_merge
from centernet.engine.checkpoint import save_checkpoint
from centernet.engine.evaluate import evaluate
from centernet.engine.predict import Detector
from centernet.nms import merge_detections, soft_nms
from conftest import MODEL, bright_extent, coco_stats, scene_with_rectangle

NUM_CLASSES = 7


def random_model(seed=0):
    """The tiny zoo model with a livelier head than its initialisation, so that scores differ."""
    torch.manual_seed(seed)
    model = create_model(MODEL, num_classes=NUM_CLASSES)
    with torch.no_grad():
        for parameter in model.head.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    return model.eval()


def random_images(seed=0, sizes=((50, 90), (120, 40), (97, 131))):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def assert_same_detections(got, expected):
    assert len(got) == len(expected)
    for result, reference in zip(got, expected):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(result[key], reference[key]), key


# --- inputs per scale ------------------------------------------------------------------------

@pytest.mark.parametrize("keep_res", [True, False])
@pytest.mark.parametrize("scale", [0.5, 0.75, 1.25, 1.5])
def test_input_at_a_scale_shows_the_image_resized_and_maps_back_to_it(keep_res, scale):
    box = (70, 50, 130, 110)  # central: a fixed-size input crops the image at scales above 1
    image = scene_with_rectangle(160, 200, box)
    transform = EvalTransform(input_size=(256, 256), keep_res=keep_res)
    reference, _, _, _ = transform(image, np.zeros((0, 4), np.float32), np.zeros((0,), np.int64))
    tensor, inverse = transform.at_scale(image, scale)
    if keep_res:  # each side padded to the multiple of 32 above the resized side
        assert tensor.shape == (3, (int(160 * scale) | 31) + 1, (int(200 * scale) | 31) + 1)
    else:
        assert tensor.shape == (3, 256, 256)
    lit, lit_at_one = bright_extent(tensor), bright_extent(reference)
    np.testing.assert_allclose(lit[2:] - lit[:2], scale * (lit_at_one[2:] - lit_at_one[:2]), atol=2.0)
    back = affine_points(lit.reshape(2, 2), inverse).reshape(4)  # input pixels -> original pixels
    zoom = scale * (1.0 if keep_res else 256 / 200)  # input pixels per original pixel
    np.testing.assert_allclose(back, box, atol=1.5 / zoom)


def test_input_at_scale_one_is_the_transform_itself():
    image = random_images()[2]
    transform = EvalTransform(input_size=(96, 128), keep_res=False)
    tensor, _, _, inverse = transform(image, np.zeros((0, 4), np.float32), np.zeros((0,), np.int64))
    at_one, inverse_at_one = transform.at_scale(image)
    assert np.array_equal(tensor, at_one) and np.array_equal(inverse, inverse_at_one)
    with pytest.raises(ValueError, match="positive"):
        transform.at_scale(image, 0.0)


# --- the detector ----------------------------------------------------------------------------

@pytest.mark.parametrize("flip", [False, True])
def test_scale_one_is_exactly_the_single_scale_pipeline(flip):
    model, images = random_model(), random_images()
    detector = Detector(model, input_size=(64, 96), keep_res=True, flip=flip, score_threshold=0.05, device="cpu")
    assert detector.scales == (1.0,)
    got = detector(images, batch_size=2)

    expected = []  # transform, model, (flip merge), decode, stride, inverse affine, clip, threshold
    for start in (0, 2):
        chunk = images[start:start + 2]
        inputs = [detector.transform(image, np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)) for image in chunk]
        height = max(item[0].shape[1] for item in inputs)
        width = max(item[0].shape[2] for item in inputs)
        batch = torch.zeros(len(chunk), 3, height, width)
        for i, item in enumerate(inputs):
            batch[i, :, :item[0].shape[1], :item[0].shape[2]] = torch.as_tensor(item[0])
        with torch.inference_mode():
            if flip:  # one pass over the images and their mirrors
                both = model(torch.cat([batch, batch.flip(-1)]))
                outputs = flip_merge({k: v[:len(chunk)] for k, v in both.items()},
                                     {k: v[len(chunk):] for k, v in both.items()})
            else:
                outputs = model(batch)
            boxes, scores, labels = decode(outputs["heatmap"], outputs["wh"], outputs["offset"], k=100)
            boxes = affine_boxes(boxes * 4, torch.stack([torch.as_tensor(item[3]) for item in inputs]))
        for i, image in enumerate(chunk):
            keep = scores[i] > 0.05
            image_boxes = boxes[i][keep]
            image_boxes[:, 0::2] = image_boxes[:, 0::2].clamp(0, image.shape[1])
            image_boxes[:, 1::2] = image_boxes[:, 1::2].clamp(0, image.shape[0])
            expected.append({"boxes": image_boxes, "scores": scores[i][keep], "labels": labels[i][keep]})
    assert_same_detections(got, expected)


def test_evaluation_runs_the_detector_on_the_images(data_dir):  # noqa: F811
    detector = Detector(random_model(), input_size=(64, 64), keep_res=False, scales=(0.75, 1), device="cpu")
    dataset = CocoDetection(data_dir / "val/images", data_dir / "val/annotations.json", detector.transform)
    metrics, detections = evaluate(detector, dataset, batch_size=3, progress=False)
    assert metrics["AP"] == pytest.approx(coco_stats(data_dir / "val/annotations.json", detections)["AP"], abs=1e-9)
    results = detector([dataset.image_path(i) for i in range(len(dataset))], batch_size=3)
    expected = [(dataset.image_ids[i], dataset.cat_ids[label], score)
                for i, result in enumerate(results)
                for label, score in zip(result["labels"].tolist(), result["scores"].tolist())]
    assert [(d["image_id"], d["category_id"]) for d in detections] == [e[:2] for e in expected]
    np.testing.assert_allclose([d["score"] for d in detections], [e[2] for e in expected], atol=1e-5)


@pytest.mark.parametrize("merge", ["soft-nms", "nms"])
@pytest.mark.parametrize("keep_res, flip", [(True, False), (False, True)])
def test_multi_scale_detections_are_few_inside_and_sorted(merge, keep_res, flip):
    images = random_images()
    detector = Detector(random_model(), input_size=(64, 64), keep_res=keep_res, flip=flip,
                        scales=(0.5, 0.75, 1, 1.25, 1.5), merge=merge, device="cpu")
    for image, result in zip(images, detector(images)):
        boxes, scores, labels = result["boxes"], result["scores"], result["labels"]
        assert 0 < len(scores) <= 100 and boxes.shape == (len(scores), 4)
        height, width = image.shape[:2]
        assert (boxes >= 0).all() and (boxes[:, 0::2] <= width).all() and (boxes[:, 1::2] <= height).all()
        assert (boxes[:, 2:] >= boxes[:, :2]).all()
        assert torch.all(scores[:-1] >= scores[1:]) and ((labels >= 0) & (labels < NUM_CLASSES)).all()


def test_bad_scales_and_merge_are_clear_errors():
    model = random_model()
    for scales in [(), (1, 0), (-0.5,)]:
        with pytest.raises(ValueError, match="test scales"):
            Detector(model, scales=scales, device="cpu")
    with pytest.raises(ValueError, match="soft-nms, nms"):
        Detector(model, scales=(1, 2), merge="wbf", device="cpu")


class BlobFinder(nn.Module):
    """A stand-in model: one class-0 peak at the brightest input pixel (offset to the pixel), its box
    2 x 2 output cells (8 input pixels) whatever the scale."""

    num_classes = 1

    def forward(self, images):
        batch, _, height, width = images.shape
        brightest = images.sum(1).flatten(1).argmax(1)  # [B]
        ys, xs = brightest // width, brightest % width
        cells = torch.arange(batch), ys // 4, xs // 4
        heatmap = torch.full((batch, 1, height // 4, width // 4), -10.0)
        heatmap[cells[0], 0, cells[1], cells[2]] = 10.0
        offset = torch.zeros(batch, 2, height // 4, width // 4)
        offset[cells[0], 0, cells[1], cells[2]] = (xs % 4).float() / 4
        offset[cells[0], 1, cells[1], cells[2]] = (ys % 4).float() / 4
        return {"heatmap": heatmap, "wh": torch.full((batch, 2, height // 4, width // 4), 2.0), "offset": offset}


def blob_image(center=(57.3, 33.7), size=(90, 150), sigma=4.0):
    ys, xs = np.mgrid[:size[0], :size[1]]
    blob = np.exp(-((xs - center[0]) ** 2 + (ys - center[1]) ** 2) / (2 * sigma ** 2))
    return np.repeat((255 * blob).astype(np.uint8)[:, :, None], 3, axis=2)


@pytest.mark.parametrize("keep_res", [True, False])
@pytest.mark.parametrize("scale", [0.5, 0.75, 1, 1.25, 1.5])
def test_each_scale_maps_its_box_back_onto_the_object(keep_res, scale):
    detector = Detector(BlobFinder(), input_size=(128, 128), keep_res=keep_res, scales=(scale,),
                        score_threshold=0.5, device="cpu")
    (result,) = detector(blob_image())
    assert len(result["boxes"]) == 1
    zoom = scale * (128 / 150 if not keep_res else 1.0)  # input pixels per original pixel
    center = (result["boxes"][0, :2] + result["boxes"][0, 2:]) / 2
    np.testing.assert_allclose(center, (57.3, 33.7), atol=1.0 / zoom)
    np.testing.assert_allclose(result["boxes"][0, 2:] - result["boxes"][0, :2], [8 / zoom] * 2, rtol=1e-4)


def test_nms_merge_removes_the_object_found_again_at_another_scale():
    # the blob's box at scale 1 (8 px) and at scale 1.25 (6.4 px) overlap with IoU ~0.64
    nms = Detector(BlobFinder(), input_size=(128, 128), scales=(1, 1.25), merge="nms", score_threshold=0.01,
                   device="cpu")(blob_image())[0]
    assert len(nms["boxes"]) == 1
    np.testing.assert_allclose(nms["boxes"][0, 2:] - nms["boxes"][0, :2], [8, 8], rtol=1e-4)

    soft = Detector(BlobFinder(), input_size=(128, 128), scales=(1, 1.25), merge="soft-nms", score_threshold=0.01,
                    device="cpu")(blob_image())[0]
    assert len(soft["boxes"]) == 2  # kept, rescored by exp(-IoU^2 / 0.5)
    iou = box_iou(soft["boxes"][:1], soft["boxes"][1:])[0, 0]
    assert 0.5 < iou < 0.8
    torch.testing.assert_close(soft["scores"], torch.sigmoid(torch.tensor(10.0)) * torch.stack(
        [torch.tensor(1.0), torch.exp(-iou ** 2 / 0.5)]))


def test_merge_is_per_class_and_keeps_the_best():
    boxes = torch.tensor([[10.0, 10, 50, 50], [11, 10, 51, 49], [10, 10, 50, 50], [200, 200, 240, 260]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([1, 1, 2, 1])  # box 1 repeats box 0 (another scale); box 2 is another class
    merged_boxes, merged_scores, merged_labels = merge_detections(boxes, scores, labels, "nms")
    assert merged_labels.tolist() == [1, 2, 1] and merged_scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert torch.equal(merged_boxes, boxes[[0, 2, 3]])
    _, soft_scores, soft_labels = merge_detections(boxes, scores, labels, "soft-nms", max_detections=3)
    iou = box_iou(boxes[:1], boxes[1:2])[0, 0]
    assert soft_labels.tolist() == [1, 2, 1]  # the duplicate fell to 0.8 * exp(-IoU^2 / 0.5) < 0.6
    assert soft_scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    _, all_scores, _ = merge_detections(boxes, scores, labels, "soft-nms")
    assert all_scores[-1].item() == pytest.approx(0.8 * float(torch.exp(-iou ** 2 / 0.5)))


# --- soft-NMS against the original ------------------------------------------------------------

def original_soft_nms(boxes, sigma=0.5, threshold=0.001, offset=1.0):
    """xingyizhou/CenterNet src/lib/external/nms.pyx ``soft_nms(method=2)`` (Gaussian), line by line,
    on float32 rows [x1, y1, x2, y2, score]; returns the rows it keeps (its first N), in its order.
    ``offset`` is its ``+ 1`` in widths and heights."""
    boxes = np.array(boxes, np.float32)
    f32 = np.float32
    count = boxes.shape[0]
    for i in range(count):
        maxscore, maxpos = boxes[i, 4], i
        tx1, ty1, tx2, ty2, ts = boxes[i]
        pos = i + 1
        while pos < count:  # the best remaining box
            if maxscore < boxes[pos, 4]:
                maxscore, maxpos = boxes[pos, 4], pos
            pos += 1
        boxes[i] = boxes[maxpos]
        boxes[maxpos] = tx1, ty1, tx2, ty2, ts
        tx1, ty1, tx2, ty2, ts = boxes[i]
        pos = i + 1
        while pos < count:  # decay the others; drop those falling below the threshold
            x1, y1, x2, y2, s = boxes[pos]
            area = (x2 - x1 + f32(offset)) * (y2 - y1 + f32(offset))
            iw = min(tx2, x2) - max(tx1, x1) + f32(offset)
            if iw > 0:
                ih = min(ty2, y2) - max(ty1, y1) + f32(offset)
                if ih > 0:
                    ua = f32((tx2 - tx1 + f32(offset)) * (ty2 - ty1 + f32(offset)) + area - iw * ih)
                    ov = f32(iw * ih / ua)
                    weight = f32(np.exp(np.float64(-(ov * ov) / f32(sigma))))  # C float, double exp
                    boxes[pos, 4] = weight * boxes[pos, 4]
                    if boxes[pos, 4] < f32(threshold):
                        boxes[pos] = boxes[count - 1]
                        count -= 1
                        pos -= 1
            pos += 1
    return boxes[:count]


def random_detections(seed, count=150, classes=1):
    """Boxes crowded into a small field (many overlaps), scores down to ~1e-6 (some get dropped),
    and 5 boxes apart from all others scoring below the threshold (kept: only a decay drops)."""
    rng = np.random.default_rng(seed)
    corners = np.concatenate([rng.uniform(0, 80, (count, 2)), 200 + 50 * np.arange(10).reshape(5, 2)])
    sizes = rng.uniform(2, 40, (count + 5, 2))
    boxes = np.concatenate([corners, corners + sizes], axis=1).astype(np.float32)
    scores = np.concatenate([rng.uniform(0.01, 1, count) ** 3, 1e-4 * np.arange(1, 6)]).astype(np.float32)
    return torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(rng.integers(0, classes, count + 5))


@pytest.mark.parametrize("seed", range(5))
def test_soft_nms_equals_the_original_loop(seed):
    boxes, scores, _ = random_detections(seed)
    reference = original_soft_nms(torch.cat([boxes, scores[:, None]], dim=1).numpy())
    keep, new_scores = soft_nms(boxes, scores, offset=1.0)
    assert 0 < len(reference) < len(boxes)  # some boxes were dropped
    assert len(keep) == len(reference)
    assert torch.equal(boxes[keep], torch.from_numpy(reference[:, :4]))  # the same boxes, the same order
    np.testing.assert_allclose(new_scores.numpy(), reference[:, 4], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_soft_nms_merge_is_the_original_loop_per_class_then_the_top_100(seed):
    boxes, scores, labels = random_detections(seed, count=400, classes=4)
    kept = []
    for label in range(4):
        rows = torch.cat([boxes, scores[:, None]], dim=1)[labels == label].numpy()
        kept += [(row, label) for row in original_soft_nms(rows, offset=0.0)]
    kept.sort(key=lambda item: -item[0][4])
    kept = kept[:100]
    merged_boxes, merged_scores, merged_labels = merge_detections(boxes, scores, labels, "soft-nms")
    assert merged_labels.tolist() == [label for _, label in kept]
    assert torch.equal(merged_boxes, torch.from_numpy(np.stack([row[:4] for row, _ in kept])))
    np.testing.assert_allclose(merged_scores.numpy(), [row[4] for row, _ in kept], rtol=1e-5, atol=1e-9)


def test_soft_nms_of_nothing_and_of_empty_boxes():
    keep, scores = soft_nms(torch.zeros(0, 4), torch.zeros(0))
    assert keep.shape == (0,) and scores.shape == (0,)
    keep, scores = soft_nms(torch.tensor([[5.0, 5, 5, 9], [5, 5, 5, 9]]), torch.tensor([0.5, 0.4]))
    assert keep.tolist() == [0, 1] and scores.tolist() == pytest.approx([0.5, 0.4])  # no NaN from 0 / 0
    with pytest.raises(ValueError, match="boxes"):
        soft_nms(torch.zeros(3, 5), torch.zeros(3))


# --- command line ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, data_dir):  # noqa: F811
    """An untrained checkpoint of the tiny model for the synthetic set's 7 classes."""
    config = Config()
    config.model.name, config.model.num_classes = MODEL, NUM_CLASSES
    config.data.input_size, config.data.eval_keep_res = (64, 64), False
    path = tmp_path_factory.mktemp("run") / "best.pt"
    names = [c["name"] for c in json.loads((data_dir / "val/annotations.json").read_text())["categories"]]
    save_checkpoint({"model": random_model().state_dict(), "config": config.to_dict(), "class_names": names}, path)
    return path


def test_cli_eval_and_predict_with_scales(checkpoint, data_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "eval"
    assert main(["eval", "--weights", str(checkpoint), "--data", str(data_dir), "--scales", "0.75,1", "--flip",
                 "--device", "cpu", "--out", str(out)]) == 0
    metrics = json.loads((out / "eval.json").read_text())
    assert "AP50" in capsys.readouterr().out
    detections = json.loads((out / "detections.json").read_text())
    expected = coco_stats(data_dir / "val/annotations.json", detections)
    assert (metrics["AP"], metrics["AP50"]) == pytest.approx((expected["AP"], expected["AP50"]), abs=1e-9)
    per_image = np.bincount([d["image_id"] for d in detections])
    assert per_image.max() <= 100 and len(detections) > 0

    pred = tmp_path / "pred"
    assert main(["predict", str(data_dir / "val/images"), "--weights", str(checkpoint), "--scales", "0.5,1.5",
                 "--merge", "nms", "--score-threshold", "0", "--device", "cpu", "--out", str(pred)]) == 0
    records = json.loads((pred / "predictions.json").read_text())
    assert len(records) == 4 and all(0 < len(r["detections"]) <= 100 for r in records)


@pytest.mark.parametrize("scales", ["0", "1,-2", "a,b", ","])
def test_cli_rejects_bad_scales(scales, checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--weights", str(checkpoint), "--scales", scales])
    assert exit_info.value.code == 2 and "positive numbers" in capsys.readouterr().err
