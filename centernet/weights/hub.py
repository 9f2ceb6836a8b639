"""Zoo weights by name: PaddleDetection's published CenterNet ``.pdparams``, downloaded once into a cache.

    path = zoo_weights("centernet_dla34")        # ~/.cache/centernet/centernet_dla34_140e_coco.pdparams
    model = centernet.create_model("centernet_dla34", pretrained=True)
    path = backbone_weights("centernet_dla34")   # the ImageNet backbone the row was trained from
    model = centernet.create_model("centernet_dla34", pretrained_backbone=True)

The cache is ``$CENTERNET_HOME`` or ``~/.cache/centernet``. A download goes to a temporary file
beside its destination and is renamed into place only after its size (and SHA-256, when known)
checked out, so the cache never holds a partial or wrong file. Offline, the error names the URL and
the path to put the file at by hand. The files are read by the restricted loader like any other.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from ..io import OutputError, atomic_open
from .pdparams import WeightsError

_PADDLE_MODELS = "https://bj.bcebos.com/v1/paddledet/models"
# configs/centernet/README.md of PaddleDetection: the model-zoo table's download links.
ZOO_URLS = {name: f"{_PADDLE_MODELS}/{name}_140e_coco.pdparams" for name in (
    "centernet_dla34", "centernet_r50", "centernet_mbv1", "centernet_mbv3_small", "centernet_mbv3_large",
    "centernet_shufflenetv2")}
# SHA-256 of the files, where known (PaddleDetection publishes none): filled in as they are verified.
ZOO_SHA256: dict[str, str] = {}
_PRETRAINED = "https://paddledet.bj.bcebos.com/models/pretrained"
# The ImageNet-pretrained backbones PaddleDetection trains each row from: ``pretrain_weights`` of
# configs/centernet/_base_/centernet_dla34.yml, _base_/centernet_r50.yml and the mobile rows' configs.
BACKBONE_URLS = {
    "centernet_dla34": "https://bj.bcebos.com/v1/paddledet/models/pretrained/DLA34_pretrain.pdparams",
    "centernet_r50": f"{_PRETRAINED}/ResNet50_vd_ssld_pretrained.pdparams",
    "centernet_mbv1": f"{_PRETRAINED}/MobileNetV1_pretrained.pdparams",
    "centernet_mbv3_small": f"{_PRETRAINED}/MobileNetV3_small_x1_0_ssld_pretrained.pdparams",
    "centernet_mbv3_large": f"{_PRETRAINED}/MobileNetV3_large_x1_0_ssld_pretrained.pdparams",
    "centernet_shufflenetv2": f"{_PRETRAINED}/ShuffleNetV2_x1_0_pretrained.pdparams",
}
BACKBONE_SHA256: dict[str, str] = {}
_CHUNK = 1 << 20


class DownloadError(WeightsError):
    """A file could not be downloaded, or what came did not check out."""


def cache_dir() -> Path:
    """``$CENTERNET_HOME`` if set, else ``~/.cache/centernet``."""
    return Path(os.environ.get("CENTERNET_HOME") or Path.home() / ".cache" / "centernet")


def zoo_weights(name: str, progress: bool = True) -> Path:
    """The cached path of zoo model ``name``'s COCO weights, downloading them the first time."""
    return _cached(name, ZOO_URLS, ZOO_SHA256, "weights", progress)


def backbone_weights(name: str, progress: bool = True) -> Path:
    """The cached path of the ImageNet backbone weights zoo model ``name`` is trained from,
    downloading them the first time."""
    return _cached(name, BACKBONE_URLS, BACKBONE_SHA256, "ImageNet backbone weights", progress)


def _cached(name: str, urls: dict[str, str], hashes: dict[str, str], what: str, progress: bool) -> Path:
    if name not in urls:
        raise ValueError(f"no published {what} for {name!r}; models with them: {', '.join(sorted(urls))}")
    url = urls[name]
    return download(url, cache_dir() / url.rsplit("/", 1)[-1], sha256=hashes.get(name), progress=progress)


def download(url: str, dest: str | Path, sha256: str | None = None, size: int | None = None,
             progress: bool = True, timeout: float = 30.0) -> Path:
    """Fetch ``url`` to ``dest`` (kept if already there and, with ``sha256``, intact); returns ``dest``.

    The size is checked against ``size`` or the server's Content-Length, and the SHA-256 against
    ``sha256``; on any failure nothing is left at ``dest`` nor beside it.
    """
    dest = Path(dest)
    if dest.is_file() and (sha256 is None or _sha256(dest) == sha256.lower()):
        return dest
    with atomic_open(dest) as out:  # renamed into place only if no check below raises
        received, digest = _fetch(url, out, size, progress, timeout, dest)
        if size is not None and received != size:
            raise DownloadError(f"{url}: received {received} bytes, expected {size}; nothing saved")
        if sha256 is not None and digest != sha256.lower():
            raise DownloadError(f"{url}: SHA-256 {digest} differs from the expected {sha256.lower()} "
                                f"(a damaged or changed file); nothing saved")
    return dest


def _fetch(url: str, out, size: int | None, progress: bool, timeout: float, dest: Path) -> tuple[int, str]:
    """Stream ``url`` into ``out`` with a progress bar; returns (bytes received, SHA-256 hex)."""
    from tqdm import tqdm

    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else size
            with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
                      disable=not progress) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except OutputError:
        raise  # our disk, not the connection
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise DownloadError(f"could not download {url} ({reason}); without a connection, download it "
                            f"elsewhere and put it at {dest}") from None
    if expected is not None and received != expected:
        raise DownloadError(f"{url}: the connection ended after {received} of {expected} bytes; nothing saved")
    return received, digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
