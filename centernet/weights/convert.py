"""``convert_weights(in, out)``: any weights file we read, written as safetensors (loads without pickle).

    convert_weights("centernet_dla34_140e_coco.pdparams", "dla34.safetensors", model="centernet_dla34")

The file is read like :func:`~centernet.weights.load_weights` reads it (the restricted unpickler or
``torch.load(weights_only=True)``), its keys mapped to our names; with a model the weights must fit it strictly, else nothing is written. The output holds the
source format, the input's file name and the model (when known) in its header, and is written
atomically (a temporary file renamed into place).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from .loading import load_state, read_weights
from .safetensors_io import SUFFIX, write_safetensors

__all__ = ["Converted", "convert_weights"]


@dataclass
class Converted:
    """What :func:`convert_weights` wrote."""

    path: Path
    source: str  # the input's format: "paddle", "original", "centernet" or "safetensors"
    tensors: int
    metadata: dict[str, str]

    def __str__(self):
        checked = f"; checked against {self.metadata['model']}" if "model" in self.metadata else ""
        return f"{self.path}: {self.tensors} tensors ({self.source} format -> safetensors){checked}"


def convert_weights(in_path, out_path, model: nn.Module | str | None = None, num_classes: int = 80) -> Converted:
    """Write the weights of ``in_path`` to the safetensors file ``out_path`` (our key names).

    ``model`` (a zoo name, built with ``num_classes``, or a module, into which the check loads the
    weights) makes the conversion strict: the weights must fit it key for key and shape for shape,
    else :class:`~centernet.weights.WeightsMismatchError` lists the misfits and nothing is written.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    if out_path.suffix != SUFFIX:
        raise ValueError(f"{out_path}: the output must be a {SUFFIX} file")
    source, weights = read_weights(in_path)
    metadata = {"format": "centernet", "source": source, "source_file": in_path.name}
    if isinstance(model, str):
        from ..models import build_model

        metadata.update(model=model, num_classes=str(num_classes))
        model = build_model(model, num_classes=num_classes)
    if model is not None:
        load_state(model, weights, source, in_path)  # strict: raises before anything is written
    write_safetensors(out_path, weights, metadata)
    return Converted(out_path, source, len(weights), metadata)
