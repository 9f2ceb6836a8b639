"""`predict --heatmap`: the class heatmaps land on the image where the detections are."""

import cv2
import numpy as np
import torch
from torch import nn

from centernet import create_model
from centernet.cli import main
from centernet.config import Config
from centernet.engine.checkpoint import save_checkpoint
from centernet.engine.predict import Detector
from centernet.viz import class_color, heatmap_overlay, save_image


class OnePeak(nn.Module):
    """A stand-in model: one sharp class-1 peak at output cell (x=10, y=5), zero sizes and offsets."""

    num_classes, stride = 2, 4

    def forward(self, images):
        batch, _, height, width = images.shape
        heatmap = torch.full((batch, 2, height // 4, width // 4), -10.0)
        heatmap[:, 1, 5, 10] = 10.0
        zeros = torch.zeros(batch, 2, height // 4, width // 4)
        return {"heatmap": heatmap, "wh": zeros, "offset": zeros}


def test_heatmap_peak_is_where_the_detection_is():
    image = np.zeros((90, 200, 3), np.uint8)  # wide: letterboxed into the square input
    detector = Detector(OnePeak(), input_size=(64, 64), keep_res=False, device="cpu")
    detection = detector(image)[0]  # decode + inverse affine: the independent path to image pixels
    assert detection["labels"][0] == 1
    x, y = detection["boxes"][0, :2].tolist()  # zero size: the box is the peak's point

    heatmaps = detector.heatmaps(image)
    assert heatmaps.shape == (2, 90, 200)
    peak_y, peak_x = np.unravel_index(heatmaps[1].argmax(), heatmaps[1].shape)
    assert abs(peak_x - x) <= 1.5 and abs(peak_y - y) <= 1.5
    assert heatmaps[1].max() > 0.9 and heatmaps[0].max() < 1e-3


def test_overlay_colours_by_class_and_leaves_the_rest():
    image = np.full((4, 4, 3), 100, np.uint8)
    heatmaps = np.zeros((3, 4, 4), np.float32)
    heatmaps[2, 1, 1] = 1.0
    drawn = heatmap_overlay(image, heatmaps, opacity=1.0)
    assert tuple(drawn[1, 1]) == class_color(2)
    assert (drawn[0, 0] == 100).all()


def test_cli_predict_heatmap_writes_an_overlay_per_image(tmp_path):
    config = Config()
    config.model.name, config.model.num_classes = "centernet_mbv3_small", 3
    config.data.input_size, config.data.eval_keep_res = (64, 64), False
    weights = tmp_path / "best.pt"
    save_checkpoint({"model": create_model("centernet_mbv3_small", num_classes=3).state_dict(),
                     "config": config.to_dict(), "class_names": ["a", "b", "c"]}, weights)
    save_image(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8), tmp_path / "in" / "x.png")
    assert main(["predict", str(tmp_path / "in"), "--weights", str(weights), "--out", str(tmp_path / "out"),
                 "--heatmap", "--device", "cpu"]) == 0
    overlay = cv2.imread(str(tmp_path / "out" / "x_heatmap.jpg"))
    assert overlay is not None and overlay.shape == (50, 70, 3)
