"""Video prediction: every frame detected in order, an annotated video of the same length written."""

import json

import cv2
import numpy as np
import pytest
import torch

from centernet import create_model
from centernet.cli import main
from centernet.config import Config
from centernet.engine.checkpoint import save_checkpoint
from centernet.engine.predict import Detector
from centernet.engine.video import predict_video

MODEL, NUM_CLASSES, FRAMES, WIDTH, HEIGHT = "centernet_mbv3_small", 3, 30, 80, 64


def write_video(path, frames=FRAMES):
    """A moving bright square on a dark background; returns the frames as written (RGB)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (WIDTH, HEIGHT))
    assert writer.isOpened()
    written = []
    for i in range(frames):
        frame = np.full((HEIGHT, WIDTH, 3), 30, np.uint8)
        frame[10:30, 2 * i:2 * i + 20] = (250, 200, 40)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        written.append(frame)
    writer.release()
    return written


def decoded_frames(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    model = create_model(MODEL, num_classes=NUM_CLASSES)
    return Detector(model, class_names=["a", "b", "c"], input_size=(64, 64), keep_res=False, device="cpu")


def test_video_gives_one_result_per_frame_and_an_annotated_video(tmp_path, detector):
    source = tmp_path / "clip.avi"
    write_video(source)
    out = tmp_path / "out" / "clip_boxes.mp4"
    results = list(predict_video(detector, source, out, batch_size=8, progress=False))
    assert [r["frame"] for r in results] == list(range(FRAMES))

    # frame i's detections are those of the decoded frame i (batches of 8 in order, so the same
    # batch composition and the same float rounding as the video path)
    frames = decoded_frames(source)
    expected = [r for start in range(0, len(frames), 8) for r in detector.detect_images(frames[start:start + 8])]
    for result, single in zip(results, expected, strict=True):
        torch.testing.assert_close(result["boxes"], single["boxes"])
        torch.testing.assert_close(result["scores"], single["scores"])
        assert torch.equal(result["labels"], single["labels"])

    written = decoded_frames(out)
    assert len(written) == FRAMES and written[0].shape == (HEIGHT, WIDTH, 3)
    assert any(len(r["boxes"]) for r in results), "an untrained model at threshold 0 still draws boxes"
    assert np.abs(written[0].astype(int) - decoded_frames(source)[0]).max() > 60  # boxes are drawn


def test_cli_predict_on_a_video(tmp_path, capsys):
    source = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(source), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (WIDTH, HEIGHT))
    for frame in write_video(tmp_path / "unused.avi", frames=12):
        writer.write(frame)
    writer.release()
    config = Config()
    config.model.name, config.model.num_classes = MODEL, NUM_CLASSES
    config.data.input_size, config.data.eval_keep_res = (64, 64), False
    weights = tmp_path / "best.pt"
    save_checkpoint({"model": create_model(MODEL, num_classes=NUM_CLASSES).state_dict(),
                     "config": config.to_dict(), "class_names": ["a", "b", "c"]}, weights)
    assert main(["predict", str(source), "--weights", str(weights), "--out", str(tmp_path / "pred"),
                 "--score-threshold", "0.0", "--device", "cpu", "--quiet"]) == 0
    assert len(decoded_frames(tmp_path / "pred" / "clip.mp4")) == 12
    records = json.loads((tmp_path / "pred" / "clip.json").read_text())
    assert [r["frame"] for r in records] == list(range(12))
    assert "12 frame(s)" in capsys.readouterr().out


def test_unreadable_video_is_a_clear_error(tmp_path, detector):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(ValueError, match="broken.mp4: not a readable video"):
        next(predict_video(detector, bad, progress=False))
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        next(predict_video(detector, tmp_path / "missing.mp4", progress=False))
