"""Property-based tests (hypothesis) of target building and decoding, on boxes of any size and
position and maps of any size."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from centernet.decode import decode
from centernet.targets import build_targets

STRIDE = 4
settings.register_profile("centernet", deadline=None, max_examples=150)
settings.load_profile("centernet")

map_sizes = st.tuples(st.integers(1, 40), st.integers(1, 40))  # (h_out, w_out)
coordinate = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@st.composite
def any_boxes(draw, max_boxes=40):
    """Boxes anywhere: outside the image, inverted, empty, huge; labels of 1..5 classes."""
    num_classes = draw(st.integers(1, 5))
    n = draw(st.integers(0, max_boxes))
    boxes = np.array(draw(st.lists(st.tuples(coordinate, coordinate, coordinate, coordinate), min_size=n, max_size=n)),
                     np.float32).reshape(n, 4)
    labels = np.array(draw(st.lists(st.integers(0, num_classes - 1), min_size=n, max_size=n)), np.int64)
    return boxes, labels, num_classes


@given(map_sizes, any_boxes(), st.integers(1, 64))
def test_targets_never_crash_and_stay_in_bounds(size, data, max_objs):
    (h_out, w_out), (boxes, labels, num_classes) = size, data
    targets = build_targets(boxes, labels, num_classes, (h_out, w_out), stride=STRIDE, max_objs=max_objs)
    heatmap, wh, offset, index, mask = (targets[k] for k in ("heatmap", "wh", "offset", "index", "mask"))
    assert heatmap.shape == (num_classes, h_out, w_out) and heatmap.dtype == np.float32
    assert wh.shape == offset.shape == (max_objs, 2) and index.shape == mask.shape == (max_objs,)
    assert np.isfinite(heatmap).all() and heatmap.min() >= 0 and heatmap.max() <= 1
    assert set(np.unique(mask)) <= {0.0, 1.0}

    # an object is kept exactly when its box, clipped to the map, has a positive area
    clipped = (boxes[:max_objs].astype(np.float64) / STRIDE).astype(np.float32)  # the map's precision
    clipped[:, 0::2] = clipped[:, 0::2].clip(0, w_out - 1)
    clipped[:, 1::2] = clipped[:, 1::2].clip(0, h_out - 1)
    valid = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    assert mask[:len(valid)].astype(bool).tolist() == valid.tolist() and not mask[len(valid):].any()

    filled = mask.astype(bool)
    assert ((index[filled] >= 0) & (index[filled] < h_out * w_out)).all()
    assert ((offset[filled] >= 0) & (offset[filled] < 1)).all()
    assert (wh[filled] > 0).all() and (wh[filled, 0] <= w_out).all() and (wh[filled, 1] <= h_out).all()
    assert not wh[~filled].any() and not offset[~filled].any() and not index[~filled].any()
    # each object's center is a peak of height 1 on its class channel
    ys, xs = np.divmod(index[filled], w_out)
    assert (heatmap[labels[:max_objs][valid], ys, xs] == 1).all()
    assert (heatmap == 1).sum() <= filled.sum()


@st.composite
def boxes_on_the_map(draw):
    """Boxes inside the part of the image the output map covers (none is clipped), of 1 input
    pixel up to the whole map, with the maps' size."""
    h_out, w_out = draw(st.tuples(st.integers(2, 40), st.integers(2, 40)))
    right, bottom = (w_out - 1) * STRIDE, (h_out - 1) * STRIDE
    num_classes = draw(st.integers(1, 5))
    n = draw(st.integers(1, 25))
    boxes, labels = [], []
    for _ in range(n):
        width = draw(st.floats(1, right))
        height = draw(st.floats(1, bottom))
        x1 = draw(st.floats(0, right - width))
        y1 = draw(st.floats(0, bottom - height))
        boxes.append([x1, y1, x1 + width, y1 + height])
        labels.append(draw(st.integers(0, num_classes - 1)))
    return np.array(boxes, np.float32), np.array(labels, np.int64), num_classes, (h_out, w_out)


def iou(a, b):
    left_top = np.maximum(a[:2], b[:2])
    right_bottom = np.minimum(a[2:], b[2:])
    inter = np.prod(np.clip(right_bottom - left_top, 0, None))
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@given(boxes_on_the_map())
def test_decode_recovers_encoded_boxes(data):
    """Perfect network outputs built from the targets decode back to the boxes (IoU > 0.9), for
    every object whose center cell no other object shares (those overwrite each other's size)."""
    boxes, labels, num_classes, (h_out, w_out) = data
    targets = build_targets(boxes, labels, num_classes, (h_out, w_out), stride=STRIDE)
    filled = np.flatnonzero(targets["mask"])
    assert len(filled) == len(boxes)  # nothing is clipped away on the map
    wh_map = np.zeros((2, h_out * w_out), np.float32)
    offset_map = np.zeros((2, h_out * w_out), np.float32)
    wh_map[:, targets["index"][filled]] = targets["wh"][filled].T
    offset_map[:, targets["index"][filled]] = targets["offset"][filled].T

    decoded, scores, decoded_labels = decode(torch.from_numpy(targets["heatmap"])[None],
                                             torch.from_numpy(wh_map.reshape(1, 2, h_out, w_out)),
                                             torch.from_numpy(offset_map.reshape(1, 2, h_out, w_out)),
                                             k=len(boxes), apply_sigmoid=False)
    decoded = decoded[0].double().numpy() * STRIDE  # input pixels
    cells, counts = np.unique(targets["index"][filled], return_counts=True)
    alone = set(cells[counts == 1].tolist())
    for i, box in enumerate(boxes.astype(np.float64)):
        if targets["index"][i] not in alone:
            continue
        matches = [iou(box, other) for other, label in zip(decoded, decoded_labels[0].tolist()) if label == labels[i]]
        assert matches and max(matches) > 0.9, (box, decoded)


@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 9), st.integers(1, 9), st.integers(1, 300),
       st.integers(0, 2**31 - 1))
def test_decode_of_any_maps(batch, num_classes, height, width, k, seed):
    """Any map size and any K: at most K (and at most C*H*W) detections, sorted, well-formed."""
    generator = torch.Generator().manual_seed(seed)
    heatmap = torch.randn(batch, num_classes, height, width, generator=generator) * 5
    wh = torch.rand(batch, 2, height, width, generator=generator) * 10
    offset = torch.rand(batch, 2, height, width, generator=generator)
    boxes, scores, labels = decode(heatmap, wh, offset, k=k)
    count = min(k, num_classes * height * width)
    assert boxes.shape == (batch, count, 4) and scores.shape == labels.shape == (batch, count)
    assert torch.isfinite(boxes).all() and ((scores >= 0) & (scores <= 1)).all()
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    assert ((labels >= 0) & (labels < num_classes)).all()
    assert (boxes[..., 2] >= boxes[..., 0]).all() and (boxes[..., 3] >= boxes[..., 1]).all()
