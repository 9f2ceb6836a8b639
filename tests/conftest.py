"""Shared fixtures and helpers of the test suite: test modules import nothing from each other,
only from here (``from conftest import ...`` for the plain helpers; pytest hands out the fixtures).

- the tiny synthetic data set (``data_dir``) and a run configuration on it (:func:`tiny_config`);
- weights files: Paddle's layout (:func:`to_paddle`, :func:`write_pdparams`), ImageNet backbone
  files as PaddleDetection publishes them (:func:`imagenet_file`), pickles that run code;
- models whose outputs are spread out as trained ones are (:func:`lively`), images to run them on,
  and detections compared by value (:func:`assert_same_detections`);
- COCO metrics computed from a detections file on their own (:func:`coco_stats`), to check the
  figures ``eval`` and ``train`` report;
- a full disk (``full_disk``).
"""

import errno
import functools
import math
import os
import pickle
import re
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

import centernet.io as cio
from centernet import create_model
from centernet.config import Config
from centernet.data.synthetic import generate_dataset
from centernet.data.transforms import denormalize
from centernet.models.deform_conv import DeformConv2d

# The zoo rows, in PaddleDetection's table order.
ZOO = ["centernet_dla34", "centernet_r50", "centernet_mbv1", "centernet_mbv3_small",
       "centernet_mbv3_large", "centernet_shufflenetv2"]


# --- the tiny synthetic data set ---------------------------------------------------------

MODEL = "centernet_mbv3_small"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, num_train=8, num_val=4, seed=0, min_side=96, max_side=160, max_objects=4)
    return root


def coco_stats(ann_file, detections) -> dict[str, float]:
    """AP and AP50 of ``detections`` (COCO result dicts) against ``ann_file``, by pycocotools
    directly: the figures that ``eval``/``train`` report must be these."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(ann_file))
        evaluator = COCOeval(truth, truth.loadRes(list(detections)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {"AP": max(float(evaluator.stats[0]), 0.0), "AP50": max(float(evaluator.stats[1]), 0.0)}


def tiny_config(data_dir, epochs=2) -> Config:
    config = Config()
    config.model.name = MODEL
    config.data.train_images, config.data.train_ann = str(data_dir / "train/images"), str(data_dir / "train/annotations.json")
    config.data.val_images, config.data.val_ann = str(data_dir / "val/images"), str(data_dir / "val/annotations.json")
    config.data.input_size = (64, 64)
    config.data.eval_keep_res = False
    config.data.workers = 0
    config.train.epochs, config.train.batch_size, config.train.lr = epochs, 4, 1e-3
    config.train.device = "cpu"
    return config


# --- images -----------------------------------------------------------------------------------

def scene_with_rectangle(height, width, box):
    """A gray image with one white filled rectangle covering box (x1, y1, x2, y2) pixel edges."""
    image = np.full((height, width, 3), 60, np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return image


def bright_extent(image_chw):
    """Pixel-edge bbox of the bright pixels of a normalised network input."""
    rgb = denormalize(image_chw)
    ys, xs = np.nonzero(rgb.mean(axis=2) > 160)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


# --- weights files --------------------------------------------------------------------------

class Tiny(nn.Module):
    """Conv + BN + DCN + a 1x1 classifier conv: every kind of layer our models have, so every kind
    of tensor a mapping handles."""

    def __init__(self, width=4, classes=5):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3)
        self.norm = nn.BatchNorm2d(width)
        self.dcn = DeformConv2d(width, width)
        self.cls = nn.Conv2d(width, classes, 1)


def randomized(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.copy_(torch.rand(value.shape, generator=generator) + 0.5)
    return model


def to_paddle(state):
    """Our state dict as Paddle names it: BN stats renamed (conv and BN layouts are PyTorch's)."""
    arrays = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        array = value.numpy()
        key = re.sub(r"running_mean$", "_mean", re.sub(r"running_var$", "_variance", key))
        arrays[key] = array
    return arrays


def write_pdparams(path, arrays, protocol=4, as_tuples=False):
    """What paddle.save writes: a pickled dict of numpy arrays plus its name table."""
    state = {key: (f"param_{i}", value) if as_tuples else value
             for i, (key, value) in enumerate(arrays.items())}
    state["StructuredToParameterName@@"] = {key: f"param_{i}" for i, key in enumerate(arrays)}
    with open(path, "wb") as handle:
        pickle.dump(state, handle, protocol=protocol)


def assert_same_weights(model, state):
    """Every parameter and buffer equal (BN's num_batches_tracked is not a weight)."""
    for key, value in model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)


class Exploit:
    """Unpickling this creates the marker file: the proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def malicious_files(tmp_path, marker):
    payload = {"conv.weight": Exploit(marker)}
    raw_pdparams, raw_pth = tmp_path / "evil.pdparams", tmp_path / "evil.pth"
    for path in (raw_pdparams, raw_pth):
        path.write_bytes(pickle.dumps(payload, protocol=2))
    zip_pth, legacy_pth = tmp_path / "evil_zip.pth", tmp_path / "evil_legacy.pth"
    torch.save({"state_dict": payload}, zip_pth)
    torch.save({"state_dict": payload}, legacy_pth, _use_new_zipfile_serialization=False)
    return [raw_pdparams, raw_pth, zip_pth, legacy_pth]


def zip_bomb(path, inflated):
    """A zip of ``inflated`` zero bytes, deflated to about a thousandth of that."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data/0", "w") as entry:
            chunk = bytes(1 << 20)
            for _ in range(inflated >> 20):
                entry.write(chunk)
    return path


# --- ImageNet backbone files ------------------------------------------------------------------

_BN = ("weight", "bias", "_mean", "_variance")


# The ImageNet classifier layers each pretrained file carries beside the backbone (Paddle names and
# layouts: Linear weights [in, out]); the detector has no place for them, and drops them.
CLASSIFIERS = {
    "centernet_dla34": {"fc.weight": (1000, 512, 1, 1), "fc.bias": (1000,)},
    "centernet_r50": {"fc.weight": (2048, 1000), "fc.bias": (1000,)},
    "centernet_mbv1": {"out.weight": (1024, 1000), "out.bias": (1000,)},
    "centernet_mbv3_small": {"last_second_conv.conv.weight": (576, 96, 1, 1),
                             **{f"last_second_conv.bn.{n}": (576,) for n in _BN},
                             "last_conv.weight": (1024, 576, 1, 1), "out.weight": (1024, 1000), "out.bias": (1000,)},
    "centernet_mbv3_large": {"last_second_conv.conv.weight": (960, 160, 1, 1),
                             **{f"last_second_conv.bn.{n}": (960,) for n in _BN},
                             "last_conv.weight": (1280, 960, 1, 1), "out.weight": (1280, 1000), "out.bias": (1000,)},
    "centernet_shufflenetv2": {"_last_conv._conv.weight": (1024, 464, 1, 1),
                               **{f"_last_conv._batch_norm.{n}": (1024,) for n in _BN},
                               "_fc.weight": (1024, 1000), "_fc.bias": (1000,)},
}


DETECTOR_ONLY = re.compile(r"conv_offset\.")  # DCNv2 offset convs: in no ImageNet classifier


@functools.lru_cache(maxsize=None)
def imagenet_backbone(name):
    """(the file's arrays in Paddle's layout, the backbone state they hold in our names)."""
    torch.manual_seed(ZOO.index(name))
    state = randomized(create_model(name).backbone).state_dict()
    state = {k: v for k, v in state.items() if not DETECTOR_ONLY.search(k)}
    rng = np.random.default_rng(0)
    classifier = {k: rng.normal(size=shape).astype(np.float32) for k, shape in CLASSIFIERS[name].items()}
    return {**to_paddle(state), **classifier}, state


def imagenet_file(path, name, prefix=""):
    """Write ``name``'s ImageNet backbone file, keys with ``prefix``; returns its backbone state."""
    arrays, state = imagenet_backbone(name)
    write_pdparams(path, {prefix + k: v for k, v in arrays.items()})
    return state


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The download cache, ``$CENTERNET_HOME``, in a fresh folder (not created)."""
    monkeypatch.setenv("CENTERNET_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --- lively models and their detections ---------------------------------------------------------

@functools.cache
def lively_model(name, size=(96, 96), num_classes=3, seed=0):
    """Zoo model ``name`` (a 64-plane head, to be quick) with seeded :func:`lively` weights fitted
    to ``smooth_images(2, *size)``; cached, so callers must not change it."""
    torch.manual_seed(seed)
    model = create_model(name, num_classes=num_classes, head_planes=64)
    return lively(model, smooth_images(2, *size), seed)


def lively(model, images, seed=0):
    """Make a freshly built model's outputs spread out, as trained weights are, so a wrong
    layer or a wrong order shows: random BatchNorm scales and shifts with running statistics
    taken from ``images`` (activations stay O(1) through the depth), non-zero conv biases,
    deformable offsets of about a pixel (some sampling outside the image), heatmap logits with std 2 (distinct
    scores, no ties) and box sizes of about 16 output pixels."""
    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.2, generator=generator)
                module.momentum = 1.0  # the next training-mode pass sets the running statistics
            elif name.endswith("conv_offset"):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, 0.5 / math.sqrt(fan_in), generator=generator)
            elif getattr(module, "bias", None) is not None:  # conv biases start at zero
                module.bias.add_(torch.randn(module.bias.shape, generator=generator), alpha=0.1)
        model.train()(images)
        for module in norms:
            module.momentum = 0.1
            # a floor under the variance: near-constant channels would otherwise amplify float
            # rounding hundreds of times, and float32 could not match anything
            module.running_var += 0.1 * module.running_var.mean()
        model.eval()
        outputs = model(images)
        model.head.heatmap[2].conv.weight *= 2.0 / outputs["heatmap"].std()
        model.head.size[2].conv.weight *= 16.0 / outputs["wh"].std()
    return model


def smooth_images(batch, height, width, seed=0):
    """Normalised-scale images with structure at several scales (not white noise)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, 3, height // 16, width // 16, generator=generator)
    images = nn.functional.interpolate(coarse, size=(height, width), mode="bilinear")
    return images + 0.3 * torch.randn(batch, 3, height, width, generator=generator)


def photos(seed=0):
    """Two uint8 RGB 'photos' of different sizes and aspect ratios."""
    rng = np.random.default_rng(seed)
    images = []
    for height, width in ((150, 200), (120, 97)):
        coarse = rng.integers(0, 256, (height // 10 + 1, width // 10 + 1, 3)).astype(np.uint8)
        images.append(np.kron(coarse, np.ones((10, 10, 1), np.uint8))[:height, :width].copy())
    return images


def assert_same_detections(got, expected, size, score_tolerance=1e-4):
    """Same top-K: sorted scores close, and every detection found in the reference with the
    same label, a box within 1e-3 of the input size and a close score. Scores closer than the
    tolerance may come in either order, so the matching is by value, not by rank; a detection
    may be missing only where its score ties the K-th."""
    boxes, scores, labels = got
    ref_boxes, ref_scores, ref_labels = expected
    assert boxes.shape == ref_boxes.shape and labels.dtype == np.int64
    np.testing.assert_allclose(scores, ref_scores, atol=score_tolerance)
    box_tolerance = 1e-3 * size
    for b in range(len(scores)):
        used = np.zeros(len(ref_scores[b]), bool)
        for box, score, label in zip(boxes[b], scores[b], labels[b]):
            close = (~used & (ref_labels[b] == label) & (np.abs(ref_scores[b] - score) <= score_tolerance)
                     & (np.abs(ref_boxes[b] - box).max(axis=1) <= box_tolerance))
            if close.any():
                used[np.flatnonzero(close)[0]] = True
            else:
                assert score - ref_scores[b, -1] <= score_tolerance, (
                    f"image {b}: detection {label} {score:.5f} {box} not in the reference")


def assert_same_results(got, expected, image_sizes):
    for result, reference, (height, width) in zip(got, expected, image_sizes):
        assert set(result) == {"boxes", "scores", "labels"}
        as_arrays = [tuple(r[k].numpy()[None] for k in ("boxes", "scores", "labels"))
                     for r in (result, reference)]
        assert_same_detections(*as_arrays, max(height, width))


# --- a full disk ----------------------------------------------------------------------------


class FullDisk:
    """A file object that takes ``room`` bytes, then fails as a full disk does (ENOSPC)."""

    def __init__(self, handle, room):
        self.handle, self.room = handle, room

    def write(self, data):
        size = len(memoryview(data))
        if size > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= size
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(room=0, only="")``: from then on every write through centernet.io (all of
    centernet's outputs) to a destination whose path contains ``only`` fails with ENOSPC once
    ``room`` bytes of it are written, as on a full disk. ``full_disk.undo()`` makes room again."""
    real = cio._open_for_writing

    def fill(room=0, only=""):
        def opened(fd, path):
            handle = real(fd, path)
            return FullDisk(handle, room) if only in str(path) else handle

        monkeypatch.setattr(cio, "_open_for_writing", opened)

    fill.undo = lambda: monkeypatch.setattr(cio, "_open_for_writing", real)
    return fill
