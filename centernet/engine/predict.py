"""From images to detections with a PyTorch model: the ``Detector`` used by prediction, evaluation
and the CLI, and ``predict()``, which draws and saves what it finds.

:class:`Detector` is a :class:`~centernet.inference.BaseDetector` (the transform, the mapping back
to image pixels, the multi-scale merge and the threshold are there) whose network is the model::

    model(images)                  raw maps {"heatmap" logits, "wh", "offset"} at stride 4
    flip_merge (optional)          average with the horizontally flipped pass
    decode                         sigmoid, 3x3 max-pool peaks, top-K -> boxes on the output map
    * stride                       boxes in input pixels
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.images import list_images, load_image
from ..decode import decode, flip_merge
from ..inference import BaseDetector
from ..io import output_group


def select_device(device: str | torch.device | None = "auto") -> torch.device:
    """``device`` as a ``torch.device`` ("auto": CUDA when available, else the CPU); ``ValueError``
    for a name torch does not know or a GPU this machine does not have."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"device {device!r}: not a device name (cpu, cuda, cuda:N or auto)") from None
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise ValueError(f"device {device!r}: this machine has no CUDA GPU that torch can use; use cpu")
        if chosen.index is not None and chosen.index >= count:
            raise ValueError(f"device {device!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif chosen.type != "cpu" and not (chosen.type == "mps" and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r}: not available here; use cpu or cuda")
    return chosen


class Detector(BaseDetector):
    """Turns images of any size into torchvision-style detections with a PyTorch CenterNet.

    Each result is a dict with ``boxes`` [N, 4] xyxy in original-image pixels, ``scores`` [N] and
    ``labels`` [N] (contiguous class indices; ``class_names[label]`` names them; an 80-class model
    without names gets COCO's), sorted by score. ``flip``: the flip test (see
    :func:`~centernet.decode.flip_merge`); ``scales``, ``merge`` and the other arguments: see
    :class:`~centernet.inference.BaseDetector`.

        model = centernet.create_model("centernet_dla34", weights="centernet_dla34_140e_coco.pdparams")
        detections = centernet.Detector(model, score_threshold=0.3)("street.jpg")
    """

    def __init__(self, model: torch.nn.Module, class_names: Sequence[str] | None = None,
                 input_size: tuple[int, int] = (512, 512), keep_res: bool = True, flip: bool = False,
                 max_detections: int = 100, score_threshold: float = 0.0,
                 device: str | torch.device | None = "auto", scales: Sequence[float] = (1.0,),
                 merge: str = "soft-nms"):
        super().__init__(model.num_classes, class_names, input_size, keep_res, max_detections,
                         score_threshold, scales, merge)
        self.device = select_device(device)
        self.model = model.to(self.device).eval()
        self.flip = flip

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = "auto", **kwargs) -> "Detector":
        """A detector from one of our training checkpoints (``best.pt`` / ``last.pt``)."""
        from ..models import build_model
        from .checkpoint import CheckpointError, load_checkpoint, run_config

        state = load_checkpoint(path)
        config = run_config(state, path, f"the model is unknown, so name it: --model NAME --weights {path}")
        class_names = state.get("class_names")
        model = build_model(config.model.name, **config.model_kwargs())
        weights = state.get("ema") or state["model"]
        try:
            model.load_state_dict(weights)
        except RuntimeError as error:
            first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
            raise CheckpointError(f"{path}: its weights do not fit the model its configuration names "
                                  f"({config.model.name}): {first}") from None
        kwargs.setdefault("input_size", config.data.input_size)
        kwargs.setdefault("keep_res", config.data.eval_keep_res)
        return cls(model, class_names=class_names, device=device, **kwargs)

    @classmethod
    def from_pretrained(cls, name: str, weights: str | Path | None = None, num_classes: int | None = None,
                        device: str | torch.device | None = "auto", **kwargs) -> "Detector":
        """A detector of zoo model ``name`` (``centernet.list_models()``) with PaddleDetection's
        published COCO weights (downloaded once, see ``centernet.weights.hub``), or with ``weights``
        (a ``.pdparams``, original CenterNet ``.pth`` or checkpoint file). ``num_classes`` None: 80
        for the published weights, the file's own (its heatmap head's, with its width) for
        ``weights``. 80 classes get COCO's names.

            detector = centernet.Detector.from_pretrained("centernet_dla34", score_threshold=0.3)
        """
        from ..builder import create_model

        shape = {"num_classes": 80 if num_classes is None else num_classes}
        if weights is not None and num_classes is None:  # the file's class count and head width
            from ..weights import read_weights
            from ..weights.loading import head_kwargs

            shape.update(head_kwargs(read_weights(weights)[1]))
        model = create_model(name, weights=weights, pretrained=weights is None, **shape)
        return cls(model, device=device, **kwargs)

    def raw_detections(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The model on ``images`` (flip-merged with their mirror when ``flip``), then the decode:
        top-K boxes in input pixels, scores and labels (see the base class)."""
        images = images.to(self.device)
        batch = images.shape[0]
        if self.flip:
            outputs = self.model(torch.cat([images, images.flip(-1)]))
            outputs = flip_merge({k: v[:batch] for k, v in outputs.items()},
                                 {k: v[batch:] for k, v in outputs.items()})
        else:
            outputs = self.model(images)
        boxes, scores, labels = decode(outputs["heatmap"], outputs["wh"], outputs["offset"],
                                       k=self.max_detections)  # [B, K, 4] on the output map
        stride = images.shape[-1] / outputs["heatmap"].shape[-1]
        return boxes * stride, scores, labels

    @torch.inference_mode()
    def heatmaps(self, image: np.ndarray) -> np.ndarray:
        """What the model sees: its class probabilities ``[C, H, W]`` (sigmoid of the heatmap,
        flip-merged when ``flip``; at scale 1) warped back onto the pixels of the RGB ``image [H, W, 3]``."""
        import cv2

        tensor, inverse = self.transform.at_scale(image)
        batch = torch.as_tensor(tensor)[None].to(self.device)  # [1, 3, h, w]
        outputs = self.model(batch)
        if self.flip:
            outputs = flip_merge(outputs, self.model(batch.flip(-1)))
        probabilities = outputs["heatmap"].float().sigmoid()[0].cpu().numpy()  # [C, h/4, w/4]
        stride = tensor.shape[-1] / probabilities.shape[-1]
        to_image = np.asarray(inverse, np.float64) @ np.diag([stride, stride, 1.0])  # output cell -> image pixel
        height, width = image.shape[:2]
        return np.stack([cv2.warpAffine(plane, to_image, (width, height), flags=cv2.INTER_LINEAR)
                         for plane in probabilities])  # [C, H, W]


def detection_records(result: dict[str, torch.Tensor], class_names: Sequence[str]) -> list[dict]:
    """One image's detections as JSON-ready dicts: ``box`` (xyxy), ``score``, ``label``, ``class``."""
    return [{"box": [round(float(v), 2) for v in box], "score": round(float(score), 4),
             "label": int(label), "class": class_names[int(label)]}
            for box, score, label in zip(result["boxes"], result["scores"], result["labels"])]


def predict(detector: BaseDetector, source: str | Path, out_dir: str | Path, batch_size: int = 8,
            draw: bool = True, heatmap: bool = False) -> list[dict]:
    """Run on an image or a folder; save drawn images and ``predictions.json`` in ``out_dir``
    (with ``heatmap``, also ``<name>_heatmap.jpg``: the class heatmaps over the image).

    All files are written or none: an unreadable image, a full disk or Ctrl-C leaves the files of
    an earlier prediction in ``out_dir`` as they were."""
    from ..viz import draw_detections, encode_image, heatmap_overlay

    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    out_dir = Path(out_dir)
    files = list_images(source)
    records = []
    with output_group() as out:
        for start in range(0, len(files), batch_size):
            chunk = files[start:start + batch_size]
            images = [load_image(path) for path in chunk]
            for path, image, result in zip(chunk, images, detector.detect_images(images)):
                records.append({"file": str(path), "detections": detection_records(result, detector.class_names)})
                if draw:
                    drawn = draw_detections(image, result["boxes"].numpy(), result["scores"].numpy(),
                                            result["labels"].numpy(), detector.class_names)
                    out.write_bytes(out_dir / f"{path.stem}.jpg", encode_image(drawn))
                if heatmap:
                    out.write_bytes(out_dir / f"{path.stem}_heatmap.jpg",
                                    encode_image(heatmap_overlay(image, detector.heatmaps(image))))
        out.write_json(out_dir / "predictions.json", records, indent=1)
    return records
