"""Zoo weights by name against a local HTTP server: good downloads load, bad ones leave nothing behind."""

import functools
import hashlib
import http.server
import threading

import pytest
import torch

from centernet import create_model
from centernet.cli import main
from centernet.weights import hub
from centernet.weights.hub import DownloadError, backbone_weights, download, zoo_weights
from conftest import imagenet_file

MODEL = "centernet_mbv3_small"


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; ``/cut/<file>`` announces the full length but sends half (a dropped link)."""

    def do_GET(self):
        if self.path.startswith("/cut/"):
            body = (self.directory_path / self.path[len("/cut/"):]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:len(body) // 2])
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, folder it serves, the generated weights file and its model's state)."""
    root = tmp_path_factory.mktemp("server")
    torch.manual_seed(3)
    model = create_model(MODEL, num_classes=80)
    torch.save(model.state_dict(), root / "weights.pdparams")  # the loader tells the format by content
    handler = functools.partial(_Handler, directory=str(root))
    _Handler.directory_path = root
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root, model.state_dict()
    server.shutdown()
    server.server_close()


def test_pretrained_downloads_into_the_cache_and_loads(served, cache, monkeypatch):
    base, root, state = served
    sha = hashlib.sha256((root / "weights.pdparams").read_bytes()).hexdigest()
    monkeypatch.setitem(hub.ZOO_URLS, MODEL, f"{base}/weights.pdparams")
    monkeypatch.setitem(hub.ZOO_SHA256, MODEL, sha)
    model = create_model(MODEL, pretrained=True)
    assert (cache / "weights.pdparams").is_file()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert [p.name for p in cache.iterdir()] == ["weights.pdparams"]  # no temporary file left

    with pytest.warns(UserWarning, match="re-initialised"):  # cached now; another class count
        three = create_model(MODEL, num_classes=3, pretrained=True)
    for key, value in three.state_dict().items():
        if not key.startswith("head.heatmap.2."):
            assert torch.equal(value, state[key]), key


def test_bad_hash_is_refused_and_nothing_is_left(served, cache):
    base, _, _ = served
    dest = cache / "weights.pdparams"
    with pytest.raises(DownloadError, match="SHA-256"):
        download(f"{base}/weights.pdparams", dest, sha256="0" * 64, progress=False)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_truncated_download_is_refused_and_nothing_is_left(served, cache):
    base, _, _ = served
    with pytest.raises(DownloadError, match="connection ended"):
        download(f"{base}/cut/weights.pdparams", cache / "weights.pdparams", progress=False)
    assert list(cache.iterdir()) == []


def test_offline_error_names_the_url_and_where_to_put_the_file(served, cache, monkeypatch):
    base, _, _ = served
    url = f"{base}/missing.pdparams"
    monkeypatch.setitem(hub.ZOO_URLS, MODEL, url)
    with pytest.raises(DownloadError) as error:
        zoo_weights(MODEL, progress=False)
    assert url in str(error.value) and str(cache / "missing.pdparams") in str(error.value)
    assert list(cache.iterdir()) == []
    assert main(["train", "--model", MODEL, "--pretrained", "--data", "nowhere", "--quiet"]) == 2


def test_zoo_urls_are_paddledetections():
    assert hub.ZOO_URLS["centernet_dla34"] == \
        "https://bj.bcebos.com/v1/paddledet/models/centernet_dla34_140e_coco.pdparams"
    with pytest.raises(ValueError, match="no published weights"):
        zoo_weights("centernet_nonexistent")


def test_pretrained_backbone_downloads_the_imagenet_file(served, cache, monkeypatch, capsys):
    base, root, _ = served
    state = imagenet_file(root / "backbone.pdparams", MODEL)
    monkeypatch.setitem(hub.BACKBONE_URLS, MODEL, f"{base}/backbone.pdparams")
    model = create_model(MODEL, num_classes=3, pretrained_backbone=True)
    assert [p.name for p in cache.iterdir()] == ["backbone.pdparams"]
    for key, value in model.backbone.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, state[key]), key
    assert backbone_weights(MODEL, progress=False) == cache / "backbone.pdparams"

    url = f"{base}/missing.pdparams"  # offline / gone: the CLI names the URL and where to put the file
    monkeypatch.setitem(hub.BACKBONE_URLS, MODEL, url)
    assert main(["train", "--model", MODEL, "--pretrained-backbone", "--data", "nowhere", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert url in error and str(cache / "missing.pdparams") in error


def test_backbone_urls_are_paddledetections():
    """configs/centernet: _base_/centernet_dla34.yml, _base_/centernet_r50.yml and the mobile rows."""
    assert set(hub.BACKBONE_URLS) == set(hub.ZOO_URLS)
    assert hub.BACKBONE_URLS["centernet_dla34"] == \
        "https://bj.bcebos.com/v1/paddledet/models/pretrained/DLA34_pretrain.pdparams"
    assert hub.BACKBONE_URLS["centernet_r50"] == \
        "https://paddledet.bj.bcebos.com/models/pretrained/ResNet50_vd_ssld_pretrained.pdparams"
    assert hub.BACKBONE_URLS["centernet_mbv3_small"] == \
        "https://paddledet.bj.bcebos.com/models/pretrained/MobileNetV3_small_x1_0_ssld_pretrained.pdparams"
    with pytest.raises(ValueError, match="no published ImageNet backbone weights"):
        backbone_weights("centernet_nonexistent")
