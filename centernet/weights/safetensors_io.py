"""Weights as safetensors: a JSON header and raw tensor bytes, read without pickle.

``centernet convert`` writes them (our key names, PyTorch layout, a little metadata in the header);
:func:`~centernet.weights.read_weights` reads them, told by content rather than by name. The layout
(https://github.com/huggingface/safetensors): an 8-byte little-endian header length N, N bytes of
JSON starting with ``{``, then the tensors' bytes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..io import atomic_open
from .pdparams import WeightsFormatError

__all__ = ["SUFFIX", "is_safetensors", "implausible_header", "read_safetensors", "write_safetensors"]

SUFFIX = ".safetensors"
_MAX_HEADER = 100 << 20  # the safetensors library refuses larger headers


def declared_header_length(path: Path) -> int | None:
    """The header length a file starting like a safetensors file declares (8 bytes, then ``{``),
    else None."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return None
    return int.from_bytes(head[:8], "little")


def is_safetensors(path: Path) -> bool:
    """Whether ``path`` starts like a safetensors file (a plausible header length, then ``{``)."""
    length = declared_header_length(path)
    return length is not None and 2 <= length <= min(path.stat().st_size - 8, _MAX_HEADER)


def implausible_header(path: Path) -> str | None:
    """Why a file that starts like a safetensors file cannot be one (its header length), else None."""
    length = declared_header_length(path)
    if length is None or is_safetensors(path):
        return None
    return (f"{path}: starts like a safetensors file but declares a {length}-byte header in a "
            f"{path.stat().st_size}-byte file (truncated or corrupt?)")


def read_safetensors(path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """``(header metadata, {name: tensor})`` of a safetensors file; a damaged one raises
    :class:`WeightsFormatError` naming the file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise WeightsFormatError(f"{path}: not a readable safetensors file (truncated or corrupt?): "
                                 f"{error}") from None
    if not tensors:
        raise WeightsFormatError(f"{path}: holds no tensors")
    return metadata, tensors


def write_safetensors(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write ``tensors`` and ``metadata`` (strings) to ``path`` atomically; returns ``path``."""
    from safetensors.torch import save

    path = Path(path)
    data = save({name: value.detach().cpu().contiguous() for name, value in tensors.items()},
                metadata=metadata)
    with atomic_open(path) as handle:
        handle.write(data)
    return path
