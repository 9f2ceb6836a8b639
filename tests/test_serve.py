"""`centernet serve`: the HTTP API over a real socket (uvicorn on loopback), the dynamic batcher, the
limits and bad uploads, the timeout and the graceful shutdown on SIGTERM."""

import asyncio
import http.client
import json
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from centernet.cli import main
from centernet.config import Config
from centernet.data.transforms import MEAN, STD
from centernet.engine.checkpoint import save_checkpoint
from centernet.engine.predict import Detector
from centernet import create_model
from centernet.viz import draw_detections

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'centernet[serve]')")
from centernet.serve import DynamicBatcher, QueueFullError, ServeOptions, background_server, server_process  # noqa: E402

MODEL = "centernet_mbv3_small"
CLASSES = ["circle", "square", "triangle"]
INPUT = (128, 128)


def lively_model() -> torch.nn.Module:
    """The tiny zoo model with a random heatmap head (it finds 100 boxes anywhere) and 40x28-pixel boxes."""
    torch.manual_seed(0)
    model = create_model(MODEL, num_classes=len(CLASSES), head_planes=32)
    with torch.no_grad():
        for parameter in model.head.heatmap.parameters():
            parameter.add_(torch.randn_like(parameter))
        model.head.size[2].conv.weight.zero_()
        model.head.size[2].conv.bias.copy_(torch.tensor([10.0, 7.0]))  # output cells (x4 input pixels)
    return model.eval()


def lively_detector() -> Detector:
    return Detector(lively_model(), class_names=CLASSES, input_size=INPUT, keep_res=False, device="cpu")


class SpotModel(torch.nn.Module):
    """A stand-in detector whose answer is known: class ``c`` is found at each bright spot of colour
    channel ``c`` (red, green, blue), scored by the spot's brightness (sigmoid(8 a - 5) for a peak of
    a x 255), with a ``box`` x ``box`` pixel box. Pair it with ``spot_image``."""

    num_classes, stride = 3, 4

    def __init__(self, box: int = 48):
        super().__init__()
        self.box = box
        self.register_buffer("mean", torch.from_numpy(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.from_numpy(STD).view(1, 3, 1, 1))

    def forward(self, images):  # [B, 3, H, W] normalised BGR
        rgb = (images * self.std + self.mean).flip(1)  # in 0..1
        brightness = F.avg_pool2d(rgb, self.stride)  # [B, 3, H/4, W/4]
        heatmap = torch.where(brightness > 0.05, 8 * brightness - 5, torch.full_like(brightness, -200.0))
        batch, _, height, width = heatmap.shape
        wh = torch.full((batch, 2, height, width), self.box / self.stride)
        return {"heatmap": heatmap, "wh": wh, "offset": torch.full((batch, 2, height, width), 0.5)}


def spot_image(spots, size=(240, 320), sigma=5.0) -> np.ndarray:
    """A black RGB image with a gaussian spot of peak ``brightness`` in channel ``label`` at each
    ``(x, y, label, brightness)``."""
    height, width = size
    ys, xs = np.mgrid[0:height, 0:width]
    image = np.zeros((height, width, 3), np.float64)
    for x, y, label, brightness in spots:
        image[:, :, label] += 255 * brightness * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


SPOTS = [(58, 58, 0, 1.0), (162, 98, 1, 0.85), (258, 58, 2, 0.7), (98, 178, 0, 0.6), (226, 186, 1, 0.5)]


def spot_detector() -> Detector:
    return Detector(SpotModel(), class_names=["red", "green", "blue"], input_size=(256, 320), keep_res=True,
                    device="cpu")


def encode(image: np.ndarray, format: str = ".png") -> bytes:
    ok, data = cv2.imencode(format, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)


def request(url: str, method: str, path: str, body=None, headers=None, **query):
    """``(status, headers, body bytes)`` of one HTTP request (``body`` bytes, or an iterable of
    chunks: sent chunked, without a Content-Length)."""
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
    try:
        target = path + ("?" + urllib.parse.urlencode(query) if query else "")
        chunked = body is not None and not isinstance(body, bytes)
        connection.request(method, target, body=body, headers=headers or {}, encode_chunked=chunked)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def post_image(url, data: bytes, **query):
    """POST /predict with the raw bytes; the JSON answer (asserting 200)."""
    status, _, body = request(url, "POST", "/predict", data, **query)
    assert status == 200, body
    return json.loads(body)


def multipart(data: bytes, field: str = "image", filename: str = "photo.png") -> tuple[bytes, dict]:
    boundary = "centernet-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.fixture(scope="module")
def server():
    """A server of the lively detector on a free loopback port, and the detector it runs."""
    detector = lively_detector()
    with background_server(detector, ServeOptions(max_batch=4, max_wait_ms=5)) as url:
        yield url, detector


def test_multipart_upload_answers_the_detectors_detections(server, photo):
    url, detector = server
    body, headers = multipart(encode(photo))
    status, _, answer = request(url, "POST", "/predict", body, headers, score_threshold=0.2)
    assert status == 200
    answer = json.loads(answer)
    expected = lively_detector()(photo)[0]
    keep = expected["scores"] > 0.2
    assert 0 < keep.sum() < len(keep)  # the threshold leaves some out
    assert (answer["width"], answer["height"]) == (160, 120)
    np.testing.assert_allclose(answer["boxes"], expected["boxes"][keep].numpy(), atol=0.01)
    np.testing.assert_allclose(answer["scores"], expected["scores"][keep].numpy(), atol=1e-4)
    assert answer["labels"] == expected["labels"][keep].tolist()
    assert answer["classes"] == [CLASSES[label] for label in answer["labels"]]
    assert answer["batch_size"] >= 1 and set(answer["timing_ms"]) == {"decode", "queue", "inference", "total"}


def test_raw_body_and_the_query_parameters(server, photo):
    url, _ = server
    data = encode(photo, ".jpg")
    everything = post_image(url, data, score_threshold=0)
    assert len(everything["scores"]) == 100  # the detector's top-K (max_detections), none above 0 left out
    default = post_image(url, data)  # the server's default threshold, 0.3
    assert default["scores"] == [s for s in everything["scores"] if s > 0.3]
    assert 0 < len(default["scores"]) < 100
    capped = post_image(url, data, score_threshold=0, max_detections=7)
    assert capped["scores"] == everything["scores"][:7] and capped["boxes"] == everything["boxes"][:7]


def test_draw_returns_the_image_with_the_boxes_drawn(server, photo):
    url, _ = server
    answer = post_image(url, encode(photo), score_threshold=0.3)
    status, headers, png = request(url, "POST", "/predict", encode(photo), draw=1, format="png",
                                   score_threshold=0.3)
    assert status == 200 and headers["content-type"] == "image/png"
    assert int(headers["x-detections"]) == len(answer["scores"]) > 0
    drawn = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    result = lively_detector()(photo)[0]
    keep = result["scores"] > 0.3
    expected = draw_detections(photo, result["boxes"][keep].numpy(), result["scores"][keep].numpy(),
                               result["labels"][keep].numpy(), CLASSES)
    assert (np.abs(drawn.astype(int) - expected).max(axis=2) > 1).mean() < 0.002  # the same picture
    assert (np.abs(drawn.astype(int) - photo).max(axis=2) > 1).mean() > 0.05  # and not the photo
    status, headers, jpeg = request(url, "POST", "/predict", encode(photo), draw=1)
    assert status == 200 and headers["content-type"] == "image/jpeg" and jpeg[:3] == b"\xff\xd8\xff"


def test_model_and_health(server):
    url, _ = server
    status, _, body = request(url, "GET", "/model")
    model = json.loads(body)
    assert status == 200
    assert model["name"] == MODEL and model["backend"] == "torch" and model["classes"] == CLASSES
    assert model["input_size"] == list(INPUT) and model["server"]["max_batch"] == 4
    status, _, body = request(url, "GET", "/health")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["queued"] == health["in_flight"] == 0
    assert health["active"] == 0


def test_the_page_and_its_files_are_served_without_outside_links(server):
    url, _ = server
    status, headers, page = request(url, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    for path in ("/static/page.js", "/static/page.css"):
        assert request(url, "GET", path)[0] == 200
        assert path.encode() in page
    for text in (page, request(url, "GET", "/static/page.js")[2]):
        assert not re.search(rb"""(src|href|url)\(?=?["']?(https?:)?//""", text)  # no CDN: works offline


def truncated_png(photo):
    data = encode(photo)
    return data[: len(data) // 2]


BAD_UPLOADS = {
    # name: (body, headers, query, status, words the error names)
    "zero bytes": (b"", {}, {}, 400, ["empty", "0 bytes"]),
    "not an image": (b"name,score\nzebra,0.9\n", {}, {}, 400, ["not a readable image"]),
    "truncated": (None, {}, {}, 400, ["truncated"]),
    "multipart without a file": (b"--b\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--b--\r\n",
                                 {"Content-Type": "multipart/form-data; boundary=b"}, {}, 400, ["'image'"]),
    "over max-upload-mb": (bytes(300_000), {}, {}, 413, ["--max-upload-mb"]),
    "over max-pixels": ("big", {}, {}, 413, ["--max-pixels", "1000x800"]),
    "score_threshold above 1": ("photo", {}, {"score_threshold": 2}, 422, ["score_threshold"]),
    "max_detections 0": ("photo", {}, {"max_detections": 0}, 422, ["max_detections"]),
    "format gif": ("photo", {}, {"draw": 1, "format": "gif"}, 422, ["format"]),
}


@pytest.fixture(scope="module")
def limited_server():
    """A server with small limits: 0.2 MB uploads (plus the multipart allowance), 500,000 pixels."""
    with background_server(lively_detector(), ServeOptions(max_upload_mb=0.2, max_pixels=500_000)) as url:
        yield url


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_a_bad_upload_gets_a_one_line_json_error_and_the_server_goes_on(case, limited_server, photo):
    url = limited_server
    body, headers, query, status, words = BAD_UPLOADS[case]
    if body is None:
        body = truncated_png(photo)
    elif body == "big":
        body = encode(np.zeros((800, 1000, 3), np.uint8))  # small file, 800,000 pixels
    elif body == "photo":
        body = encode(photo)
    got, response_headers, answer = request(url, "POST", "/predict", body, headers, **query)
    assert got == status, answer
    assert response_headers["content-type"] == "application/json"
    error = json.loads(answer)
    assert list(error) == ["error"] and "\n" not in error["error"]
    for word in words:
        assert word in error["error"]
    assert len(post_image(url, encode(photo))["scores"]) > 0  # still serving


def test_an_upload_over_the_limit_is_refused_while_it_streams_in(limited_server):
    """A chunked upload (no Content-Length) that passes --max-upload-mb gets its 413 before the
    client has finished sending: the server stops reading instead of buffering it all."""
    parsed = urllib.parse.urlsplit(limited_server)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=60) as connection:
        connection.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
                           b"Content-Type: application/octet-stream\r\n\r\n")
        chunk = bytes(50_000)
        for _ in range(8):  # 400,000 bytes, over 0.2 MB and its multipart allowance; no final chunk
            connection.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            received = connection.recv(65536)  # the 60 s socket timeout fails the test if no answer comes
            assert received, f"connection closed without an answer: {answer!r}"
            answer += received
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert "--max-upload-mb" in json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]


def test_unknown_path_and_method_get_json_errors(server):
    url, _ = server
    for method, path, status in [("GET", "/nowhere", 404), ("GET", "/predict", 405)]:
        got, _, body = request(url, method, path)
        assert got == status
        assert "POST /predict" in json.loads(body)["error"]


def gate_model(detector: Detector) -> tuple[threading.Event, threading.Event, list[int]]:
    """Make ``detector``'s model wait for the returned ``release`` event; ``entered`` is set when a
    batch reaches the model; the list records each batch's size."""
    run_model, entered, release, batches = detector.raw_detections, threading.Event(), threading.Event(), []

    def gated(images):  # [B, 3, H, W]
        batches.append(len(images))
        entered.set()
        release.wait()
        return run_model(images)

    detector.raw_detections = gated
    return entered, release, batches


@pytest.mark.parametrize("max_batch, expected", [(1, {"1": 9}), (4, {"1": 1, "4": 2})])
def test_concurrent_requests_run_in_batches(max_batch, expected, photo):
    """While the model works on a first request, 8 more arrive; then they run as batches of
    --max-batch (two of 4; with --max-batch 1, one at a time), queued requests joining without any
    --max-wait-ms. Each answer is the detector's own."""
    detector = lively_detector()
    images = [np.roll(photo, shift, axis=1) for shift in range(9)]
    answers = [None] * 9
    with background_server(detector, ServeOptions(max_batch=max_batch, max_wait_ms=0)) as url:
        entered, release, _ = gate_model(detector)  # after the warm-up

        def send(i):
            answers[i] = post_image(url, encode(images[i]), score_threshold=0.2)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(9)]
        threads[0].start()
        assert entered.wait(60)
        for thread in threads[1:]:
            thread.start()
        deadline = time.monotonic() + 60
        while json.loads(request(url, "GET", "/health")[2])["in_flight"] < 9:  # all 8 wait for the model
            assert time.monotonic() < deadline, "the requests never reached the queue"
            time.sleep(0.05)
        release.set()
        for thread in threads:
            thread.join()
        health = json.loads(request(url, "GET", "/health")[2])
    assert health["batch_sizes"] == expected
    assert [answer["batch_size"] for answer in answers] == [1] + [max_batch] * 8
    for image, answer in zip(images, answers):
        alone = lively_detector()(image)[0]
        keep = alone["scores"] > 0.2
        np.testing.assert_allclose(answer["scores"], alone["scores"][keep].numpy(), atol=1e-4)
        np.testing.assert_allclose(answer["boxes"], alone["boxes"][keep].numpy(), atol=0.05)


def test_a_request_that_times_out_leaves_the_queue(photo):
    """While the model is stuck on request A, request B times out (503); B never reaches the model,
    and C, sent after the model is free again, is answered."""
    detector = lively_detector()
    with background_server(detector, ServeOptions(timeout_s=0.5, max_wait_ms=0)) as url:
        entered, release, batches = gate_model(detector)  # after the warm-up
        replies = {}
        first = threading.Thread(target=lambda: replies.update(a=request(url, "POST", "/predict", encode(photo))))
        first.start()
        assert entered.wait(60)
        replies["b"] = request(url, "POST", "/predict", encode(photo))  # returns after its 0.5 s timeout
        release.set()
        first.join()
        replies["c"] = request(url, "POST", "/predict", encode(photo))
        health = json.loads(request(url, "GET", "/health")[2])
    for name in ("a", "b"):  # A also waited past its timeout while its batch ran
        status, _, body = replies[name]
        assert status == 503 and "--timeout-s" in json.loads(body)["error"]
    assert replies["c"][0] == 200
    assert batches == [1, 1]  # A's batch and C's: B was dropped from the queue
    assert health["skipped"] == 1


def test_a_model_failure_is_a_one_line_500_and_the_server_goes_on(photo):
    detector = lively_detector()
    run_model, failures = detector.raw_detections, []

    def flaky(images):
        if not failures:
            failures.append(len(images))
            raise RuntimeError("out of memory\nat layer 3")
        return run_model(images)

    with background_server(detector, ServeOptions(max_wait_ms=0), log_level="critical") as url:
        detector.raw_detections = flaky  # after the warm-up
        status, _, body = request(url, "POST", "/predict", encode(photo))
        assert status == 500
        assert json.loads(body) == {"error": "internal error in POST /predict: RuntimeError: out of memory at layer 3"}
        assert len(post_image(url, encode(photo))["scores"]) > 0
        assert json.loads(request(url, "GET", "/health")[2])["errors"] == 1


async def until(condition, limit_s=60):
    """Yield to the event loop until ``condition()`` holds (failing after ``limit_s``)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.01)


def test_batcher_waits_for_more_only_when_clients_are_concurrent():
    """--max-wait-ms applies under concurrent load only: a lone request runs at once (a 60 s wait
    would trip the 30 s guard); after a batch of 2, the next request waits for a partner."""
    async def scenario():
        batcher = DynamicBatcher(lambda items: [item.upper() for item in items], max_batch=2, max_wait_ms=60_000)
        await batcher.start()
        alone = await asyncio.wait_for(batcher.submit("a"), 30)
        pair = await asyncio.gather(batcher.submit("b"), batcher.submit("c"))  # queued together: one batch
        first = asyncio.ensure_future(batcher.submit("d"))
        await until(lambda: batcher.in_flight == 1 and batcher.queued == 0)  # "d" taken, its batch waiting
        second = await asyncio.wait_for(batcher.submit("e"), 30)  # joins "d"
        await batcher.stop()
        return alone, pair, await first, second, dict(batcher.batch_sizes)

    alone, pair, first, second, sizes = asyncio.run(scenario())
    assert [alone[0], *(result for result, _ in pair), first[0], second[0]] == ["A", "B", "C", "D", "E"]
    assert (alone[1].batch_size, first[1].batch_size, second[1].batch_size) == (1, 2, 2)
    assert sizes == {1: 1, 2: 2}


def test_batcher_waits_when_other_requests_are_still_being_answered():
    """Two clients by turns: "y" arrives while "x" runs alone; when "y" is taken, "x" is not answered
    yet (its client will send again), so "y" waits for "z" instead of running alone."""
    entered, release = threading.Event(), threading.Event()

    def run_batch(items):
        entered.set()
        release.wait()
        return [item.upper() for item in items]

    async def scenario():
        batcher = DynamicBatcher(run_batch, max_batch=2, max_wait_ms=60_000)
        await batcher.start()
        x = asyncio.ensure_future(batcher.submit("x"))
        await until(entered.is_set)
        y = asyncio.ensure_future(batcher.submit("y"))
        await until(lambda: batcher.queued == 1)
        release.set()
        await until(lambda: x.done() and batcher.queued == 0)  # "y" taken, its batch waiting
        z = await asyncio.wait_for(batcher.submit("z"), 30)
        await batcher.stop()
        return await x, await y, z, dict(batcher.batch_sizes)

    x, y, z, sizes = asyncio.run(scenario())
    assert (x[0], y[0], z[0]) == ("X", "Y", "Z") and (y[1].batch_size, z[1].batch_size) == (2, 2)
    assert sizes == {1: 1, 2: 1}


def test_batcher_gives_every_request_of_a_failed_batch_the_error_and_goes_on():
    calls = []

    def run_batch(items):
        calls.append(list(items))
        if "bad" in items:
            raise RuntimeError("model failed")
        return [item.upper() for item in items]

    async def scenario():
        batcher = DynamicBatcher(run_batch, max_batch=2, max_wait_ms=10_000, max_queue=3)
        await batcher.start()
        failed = await asyncio.gather(batcher.submit("ok"), batcher.submit("bad"), return_exceptions=True)
        good = await asyncio.gather(batcher.submit("x"), batcher.submit("y"))
        # a full queue refuses at once: the worker is parked until this coroutine yields
        waiting = [asyncio.ensure_future(batcher.submit(name)) for name in "abc"]
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError, match="3 requests"):
            await batcher.submit("d")
        await batcher.stop()  # runs what is queued before it stops
        return failed, good, [await future for future in waiting], dict(batcher.batch_sizes)

    failed, good, drained, sizes = asyncio.run(scenario())
    assert [str(error) for error in failed] == ["model failed", "model failed"]
    assert [result for result, _ in good] == ["X", "Y"]
    assert [result for result, _ in drained] == ["A", "B", "C"]
    assert calls == [["ok", "bad"], ["x", "y"], ["a", "b"], ["c"]]
    assert sizes == {2: 2, 1: 1}  # the failed batch is not counted


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The lively model saved as a training checkpoint (config and class names included)."""
    config = Config()
    config.model.name, config.model.num_classes, config.model.head_planes = MODEL, len(CLASSES), 32
    config.data.input_size, config.data.eval_keep_res = INPUT, False
    path = tmp_path_factory.mktemp("serve") / "best.pt"
    save_checkpoint({"model": lively_model().state_dict(), "config": config.to_dict(), "class_names": CLASSES}, path)
    return path


def test_sigterm_lets_the_request_in_flight_finish(checkpoint, photo):
    """`centernet serve` in its own process: SIGTERM arrives while a request is half uploaded; once
    the server is shutting down, the rest of the upload is still read and answered in full, then
    the app shuts down and the process ends by the SIGTERM it deferred (uvicorn's way)."""
    data = encode(photo)
    log, shutting_down = [], threading.Event()

    def read_log(stream):
        for line in stream:
            log.append(line)
            if "Shutting down" in line:
                shutting_down.set()

    with server_process(["--weights", str(checkpoint), "--device", "cpu"], stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True) as (url, process):
        reader = threading.Thread(target=read_log, args=(process.stdout,), daemon=True)
        reader.start()
        model = json.loads(request(url, "GET", "/model")[2])
        assert model["name"] == MODEL and model["classes"] == CLASSES and model["input_size"] == list(INPUT)
        parsed = urllib.parse.urlsplit(url)
        with socket.create_connection((parsed.hostname, parsed.port), timeout=60) as connection:
            connection.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % len(data)
                               + data[: len(data) // 2])
            deadline = time.monotonic() + 60
            while json.loads(request(url, "GET", "/health")[2])["active"] == 0:  # until its upload is being read
                assert time.monotonic() < deadline, "the request never reached the app"
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            assert shutting_down.wait(60), "".join(log)
            time.sleep(1)  # the server shuts down with this upload unfinished for a while
            connection.sendall(data[len(data) // 2:])
            answer = b""
            while chunk := connection.recv(65536):  # the server closes the connection after answering
                answer += chunk
        assert process.wait(timeout=60) == -signal.SIGTERM
        reader.join(60)
    text = "".join(log)
    assert text.index("Shutting down") < text.index('"POST /predict HTTP/1.1" 200') \
        < text.index("Application shutdown complete"), text
    assert answer.startswith(b"HTTP/1.1 200 ")
    expected = lively_detector()(photo)[0]
    scores = json.loads(answer.split(b"\r\n\r\n", 1)[1])["scores"]
    assert scores == pytest.approx(expected["scores"][expected["scores"] > 0.3].tolist(), abs=1e-4)


def test_cli_serve_says_what_is_missing(capsys):
    assert main(["serve"]) == 2
    assert "give --weights CHECKPOINT" in capsys.readouterr().err
    assert main(["serve", "--model", MODEL, "--port", "0"]) == 2
    assert "--pretrained" in capsys.readouterr().err


def test_cli_serve_without_the_serve_extra_names_it(monkeypatch, capsys):
    import sys

    for name in [name for name in sys.modules if name == "centernet.serve" or name.startswith("centernet.serve.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi now raises ModuleNotFoundError
    with pytest.raises(SystemExit, match=r"pip install 'centernet\[serve\]'"):
        main(["serve", "--weights", "best.pt"])


def test_bad_server_options_are_refused_in_one_line():
    with pytest.raises(ValueError, match="--max-batch must be 1 or more"):
        ServeOptions(max_batch=0)
    with pytest.raises(ValueError, match="--score-threshold must be between 0 and 1"):
        ServeOptions(score_threshold=1.5)


def test_onnx_backend_serves_the_exported_graph(tmp_path, photo):
    pytest.importorskip("onnxruntime")
    from centernet.export import OnnxDetector, export_onnx

    path = export_onnx(lively_model(), tmp_path / "lively.onnx", input_size=INPUT, class_names=CLASSES,
                       model_name=MODEL)
    detector = OnnxDetector(path)
    with background_server(detector) as url:
        model = json.loads(request(url, "GET", "/model")[2])
        answer = post_image(url, encode(photo), score_threshold=0.2)
    assert model["backend"] == "onnx" and model["name"] == MODEL and model["classes"] == CLASSES
    expected = OnnxDetector(path)(photo)[0]
    keep = expected["scores"] > 0.2
    np.testing.assert_allclose(answer["scores"], expected["scores"][keep].numpy(), atol=1e-4)


def test_spot_model_finds_each_spot_with_its_brightness():
    """The browser test's stand-in model: one box per spot, centred on it, the brighter the higher
    its score; the scores are spread over 0..1 (the browser test's thresholds fall between them)."""
    result = spot_detector()(spot_image(SPOTS))[0]
    assert len(result["scores"]) == len(SPOTS)  # sorted by score: the spots' order
    for (x, y, label, _), box, found in zip(SPOTS, result["boxes"], result["labels"]):
        assert int(found) == label
        assert abs((box[0] + box[2]) / 2 - x) <= 4 and abs((box[1] + box[3]) / 2 - y) <= 4
        assert box[2] - box[0] == box[3] - box[1] == 48
    for threshold, count in [(0.0, 5), (0.3, 4), (0.5, 3), (0.85, 1)]:
        assert int((result["scores"] > threshold + 0.04).sum()) == int((result["scores"] > threshold - 0.04).sum()) \
            == count, threshold


def test_decoding_an_upload_reads_pixels_as_load_image_does(tmp_path, photo):
    from centernet.data.images import decode_image, load_image

    for name in ("photo.png", "photo.jpg"):
        Image.fromarray(photo).save(tmp_path / name)
        np.testing.assert_array_equal(decode_image((tmp_path / name).read_bytes()), load_image(tmp_path / name))
