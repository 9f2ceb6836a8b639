"""Video files and cameras through a ``Detector``: detections per frame and an annotated video.

OpenCV decodes and encodes (``opencv-python-headless`` is a dependency): frames are read in order,
detected ``batch_size`` at a time, drawn and written to the output video at the source's frame rate.

    for result in predict_video(detector, "street.mp4", "street_boxes.mp4"):
        print(result["frame"], result["boxes"].shape)
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..inference import BaseDetector
from ..io import output_group

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm"}
_FOURCC = {".avi": "MJPG"}  # everything else: MPEG-4 part 2, which OpenCV's own writer always has
DEFAULT_FPS = 30.0  # when the source does not say (cameras, some streams)


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def open_video(source: str | Path | int) -> cv2.VideoCapture:
    """A capture of a video file or a camera index, with a clear error when it cannot be opened."""
    if not isinstance(source, int) and not Path(source).is_file():
        raise FileNotFoundError(f"{source}: no such video file")
    capture = cv2.VideoCapture(source if isinstance(source, int) else str(source))
    if not capture.isOpened():
        what = f"camera {source}" if isinstance(source, int) else f"{source}: not a readable video"
        raise ValueError(f"{what} (OpenCV could not open it)")
    return capture


def read_frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    """RGB uint8 ``[H, W, 3]`` frames until the source ends."""
    while True:
        ok, frame_bgr = capture.read()
        if not ok:
            return
        yield cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)


def predict_video(detector: BaseDetector, source: str | Path | int, out_path: str | Path | None = None,
                  batch_size: int = 8, progress: bool = True) -> Iterator[dict]:
    """Detect objects in each frame of a video file or camera (an int index); yield one result per frame.

    Each result is the ``Detector``'s dict (``boxes`` xyxy in frame pixels, ``scores``, ``labels``)
    plus ``frame`` (its index). With ``out_path`` the frames are drawn and written there (the codec
    follows the suffix: ``.avi`` Motion-JPEG, otherwise MPEG-4). The video is finished and released
    when the generator ends or is closed (a camera runs until interrupted). A file that ends before
    the frame count its header declares (truncated) gives a warning naming it and both counts; one
    without any readable frame raises ``ValueError``.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    from tqdm import tqdm

    from ..viz import draw_detections

    capture = open_video(source)
    fps = capture.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if not isinstance(source, int) else 0
    writer = None
    bar = tqdm(total=total or None, unit="frame", desc=str(source), disable=not progress)
    try:
        index = 0
        for frames in _batches(read_frames(capture), batch_size):
            for image, result in zip(frames, detector.detect_images(frames)):
                if out_path is not None:
                    if writer is None:
                        writer = _open_writer(out_path, fps, image.shape[1], image.shape[0])
                    drawn = draw_detections(image, result["boxes"].numpy(), result["scores"].numpy(),
                                            result["labels"].numpy(), detector.class_names)
                    writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                bar.update(1)
                yield {**result, "frame": index}
                index += 1
        if not isinstance(source, int):
            if not index:
                raise ValueError(f"{source}: no frame could be decoded (an empty or damaged video)")
            if index < total:
                warnings.warn(f"{source}: only {index} of the {total} frames its header declares could be "
                              f"decoded (a truncated or damaged file); the results cover frames 0-{index - 1}",
                              stacklevel=2)
    finally:
        bar.close()
        capture.release()
        if writer is not None:
            writer.release()


def _batches(frames: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _open_writer(path: str | Path, fps: float, width: int, height: int) -> cv2.VideoWriter:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*_FOURCC.get(path.suffix.lower(), "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, float(fps), (width, height))
    if not writer.isOpened():
        raise ValueError(f"{path}: OpenCV cannot write a video of this kind (use .mp4 or .avi)")
    return writer


def video_predictions(detector: BaseDetector, source: str | Path | int, out_dir: str | Path,
                      batch_size: int = 8, progress: bool = True) -> tuple[Path, list[dict]]:
    """Write ``out_dir/<name>.<suffix>`` (annotated) and ``out_dir/<name>.json`` (detections per
    frame, as ``predict`` writes them for images); returns the video path and the records.
    A camera (an int index) runs until Ctrl-C. Both files are replaced together at the end, so a
    failure or Ctrl-C on a file leaves an earlier run's outputs whole."""
    from .predict import detection_records

    name = f"camera{source}" if isinstance(source, int) else Path(source).stem
    suffix = ".mp4" if isinstance(source, int) else Path(source).suffix.lower()
    out_video = Path(out_dir) / f"{name}{suffix}"
    records = []
    with output_group() as out:
        drawn = out.temporary_path(out_video)
        try:
            for result in predict_video(detector, source, drawn, batch_size, progress):
                records.append({"frame": result["frame"],
                                "detections": detection_records(result, detector.class_names)})
        except KeyboardInterrupt:  # how a camera run ends: keep what was seen
            if not isinstance(source, int):
                raise
        out.write_json(Path(out_dir) / f"{name}.json", records, indent=1)
    return out_video, records
