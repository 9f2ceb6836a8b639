"""The detection server: one ``Detector`` in memory behind a FastAPI app, with a web page.

Endpoints (every error is a 4xx/5xx with the one-line JSON ``{"error": "..."}``)::

    GET  /          the page: drop an image, see the boxes, filter them with a score slider
    POST /predict   an image (multipart field ``image``, or the raw file as the body) ->
                    {"width", "height", "boxes" [[x1, y1, x2, y2], ...] (image pixels),
                     "scores", "labels", "classes", "batch_size", "timing_ms"}
                    query: score_threshold (default the server's), max_detections,
                    draw=1 (the image with the boxes drawn instead, JPEG or format=png)
    GET  /model     name, classes, input size, backend and the server's limits
    GET  /health    "ok", requests answered, errors, requests active (being read, decoded, queued or
                    run), in flight (waiting for the model), queued, batch sizes run so far

One request's path: the body is read up to ``max_upload_mb`` (more is refused while it streams),
the image decoded in a worker thread (its header checked against ``max_pixels`` first), then
queued for the :class:`~centernet.serve.batching.DynamicBatcher`, which runs it through the model
with the requests queued with it (up to ``max_batch``; under concurrent load it waits up to
``max_wait_ms`` for more). The detector
keeps its top ``max_detections`` of every image; each request filters them by its own threshold.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..data.errors import ImageLoadError, ImageTooLargeError
from ..data.images import decode_image
from ..engine.predict import Detector
from .batching import BatcherStoppedError, DynamicBatcher, QueueFullError

STATIC = Path(__file__).parent / "static"
# what multipart framing (boundaries, part headers, a long file name) may add to the file's bytes
MULTIPART_OVERHEAD = 64 * 1024


@dataclass
class ServeOptions:
    """The server's batching, limits and defaults (``centernet serve`` flags of the same names)."""

    max_batch: int = 8  # images in one forward pass at most
    max_wait_ms: float = 10.0  # under concurrent load, how long a batch waits for more (see batching)
    max_queue: int = 64  # requests waiting for the model at most; more get 503
    max_upload_mb: float = 20.0  # an upload's size at most
    max_pixels: int = 40_000_000  # an image's width x height at most (checked before decoding)
    timeout_s: float = 30.0  # a request waiting longer for the model gets 503 (and leaves the queue)
    score_threshold: float = 0.3  # /predict's default

    def __post_init__(self):
        for name in ("max_batch", "max_queue", "max_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be 1 or more, got {getattr(self, name)}")
        for name in ("max_upload_mb", "timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be more than 0, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ValueError(f"--max-wait-ms must be 0 or more, got {self.max_wait_ms}")
        if not 0 <= self.score_threshold <= 1:
            raise ValueError(f"--score-threshold must be between 0 and 1, got {self.score_threshold}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class ApiError(Exception):
    """Answered as ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


def model_info(detector: Detector) -> dict:
    """What ``GET /model`` says about the detector: name, backend, classes and input size."""
    onnx = hasattr(detector, "session")  # an OnnxDetector (centernet.export) runs a session, no module
    if onnx:
        name = detector.session.get_modelmeta().custom_metadata_map.get("model", detector.path.stem)
    else:  # create_model's name; optimize_for_inference wraps the model it was given as .model
        model = detector.model
        name = getattr(model, "model_name", None) or getattr(getattr(model, "model", None), "model_name", None)
        name = name or type(model).__name__
    transform = detector.transform
    return {"name": name, "backend": "onnx" if onnx else "torch", "device": str(detector.device),
            "classes": list(detector.class_names), "num_classes": len(detector.class_names),
            "input_size": list(transform.input_size), "keep_res": transform.keep_res,
            "max_detections": detector.max_detections, "flip": detector.flip, "scales": list(detector.scales)}


def create_app(detector: Detector, options: ServeOptions | None = None) -> FastAPI:
    """The FastAPI app serving ``detector`` (see the module docstring). The detector's own
    ``score_threshold`` is set to 0: requests filter by theirs."""
    options = options or ServeOptions()
    detector.score_threshold = 0.0
    batcher = DynamicBatcher(detector.detect_images, max_batch=options.max_batch,
                             max_wait_ms=options.max_wait_ms, max_queue=options.max_queue)
    info = model_info(detector)
    counts = {"requests": 0, "errors": 0, "active": 0}  # active: POST /predict being read, decoded, queued or run
    started = time.time()

    async def lifespan(app: FastAPI):
        height, width = detector.transform.input_size
        # one warm-up pass, so that the first request does not pay for the first forward
        await run_in_threadpool(detector.detect_images, [np.zeros((height, width, 3), np.uint8)])
        await batcher.start()
        yield
        await batcher.stop()  # runs what is still queued: requests in flight get their answers

    # no /docs: FastAPI's Swagger page loads its script from a CDN, and the server works offline
    app = FastAPI(title="centernet serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher, app.state.detector, app.state.options = batcher, detector, options

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        counts["errors"] += 1
        return _error(error.status, error.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        counts["errors"] += 1
        problems = [f"{' '.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors()]
        return _error(422, "; ".join(problems))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        message = f"{request.method} {request.url.path}: {error.detail}"
        if error.status_code in (404, 405):
            message += " (endpoints: GET /, GET /model, GET /health, POST /predict)"
        return _error(error.status_code, message, headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception):  # uvicorn logs the traceback too
        counts["errors"] += 1
        return _error(500, f"internal error in {request.method} {request.url.path}: "
                           f"{type(error).__name__}: {error}")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health")
    async def health():
        return {"status": "ok", "uptime_s": round(time.time() - started, 1), **counts, **batcher.stats()}

    @app.get("/model")
    async def model():
        return {**info, "server": asdict(options)}

    @app.post("/predict")
    async def predict(request: Request,
                      score_threshold: float | None = Query(None, ge=0, le=1),
                      max_detections: int | None = Query(None, ge=1),
                      draw: bool = False, format: Literal["jpeg", "png"] = "jpeg"):
        counts["active"] += 1
        try:
            return await answer(request, score_threshold, max_detections, draw, format)
        finally:
            counts["active"] -= 1

    async def answer(request: Request, score_threshold: float | None, max_detections: int | None,
                     draw: bool, format: str):
        arrived = time.perf_counter()
        data, name = await read_upload(request, options.max_upload_bytes)
        try:
            image = await run_in_threadpool(decode_image, data, name, options.max_pixels)
        except ImageTooLargeError as error:
            raise ApiError(413, f"{error} (--max-pixels)") from None
        except ImageLoadError as error:
            raise ApiError(400, str(error)) from None
        decoded = time.perf_counter()
        try:
            result, batch = await batcher.submit(image, timeout=options.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(503, f"no result within {options.timeout_s:g} s (--timeout-s): the server is "
                                f"overloaded, try again") from None
        except QueueFullError as error:
            raise ApiError(503, f"server busy: {error}; try again") from None
        except BatcherStoppedError as error:
            raise ApiError(503, str(error)) from None
        threshold = options.score_threshold if score_threshold is None else score_threshold
        keep = result["scores"] > threshold
        boxes, scores, labels = (result[key][keep][:max_detections] for key in ("boxes", "scores", "labels"))
        counts["requests"] += 1
        timing = {"decode": 1000 * (decoded - arrived), "queue": batch.queue_ms, "inference": batch.inference_ms}
        if draw:
            content = await run_in_threadpool(_drawn, image, boxes, scores, labels, detector.class_names, format)
            timing["total"] = 1000 * (time.perf_counter() - arrived)
            return Response(content, media_type=f"image/{format}",
                            headers={"X-Detections": str(len(scores)), "X-Batch-Size": str(batch.batch_size),
                                     "X-Timing-Ms": json.dumps({k: round(v, 2) for k, v in timing.items()})})
        timing["total"] = 1000 * (time.perf_counter() - arrived)
        height, width = image.shape[:2]
        return {"width": width, "height": height,
                "boxes": [[round(float(v), 2) for v in box] for box in boxes.tolist()],
                "scores": [round(float(s), 4) for s in scores.tolist()],
                "labels": [int(label) for label in labels.tolist()],
                "classes": [detector.class_names[int(label)] for label in labels.tolist()],
                "batch_size": batch.batch_size,
                "timing_ms": {k: round(v, 2) for k, v in timing.items()}}

    return app


async def read_upload(request: Request, limit: int) -> tuple[bytes, str]:
    """The uploaded file's bytes and a name for errors: the multipart field ``image`` (or the only
    file of the form), else the raw body. Refuses more than ``limit`` bytes while they stream in."""
    declared = request.headers.get("content-length", "")
    over = f"upload over the limit of {limit / 2 ** 20:g} MB (--max-upload-mb)"
    if declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD:
        raise ApiError(413, f"{over}: {int(declared):,} bytes")
    received = 0

    async def receive():  # the body, counted as it arrives
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > limit + MULTIPART_OVERHEAD:
            raise ApiError(413, f"{over}: more than {received:,} bytes")
        return message

    counted = Request(request.scope, receive)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await counted.form(max_files=1, max_fields=8)
        try:
            files = [value for value in form.values() if isinstance(value, UploadFile)]
            upload = form.get("image") if isinstance(form.get("image"), UploadFile) else None
            upload = upload or (files[0] if files else None)
            if upload is None:
                raise ApiError(400, "multipart upload without a file: send the image in a field named 'image'")
            data, name = await upload.read(), upload.filename or "upload"
        finally:
            await form.close()
    else:
        data, name = await counted.body(), "request body"
    if len(data) > limit:
        raise ApiError(413, f"{over}: {len(data):,} bytes")
    return data, name


def _drawn(image: np.ndarray, boxes, scores, labels, class_names, format: str) -> bytes:
    """The RGB ``image`` with the detections drawn, encoded as JPEG or PNG."""
    import cv2

    from ..viz import draw_detections

    drawn = draw_detections(image, boxes.numpy(), scores.numpy(), labels.numpy(), class_names)
    ok, encoded = cv2.imencode(".png" if format == "png" else ".jpg", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"could not encode the drawn image as {format}")
    return encoded.tobytes()
