"""`centernet serve`: a detection server (FastAPI + uvicorn) with dynamic batching and a web page.

Needs the ``serve`` extra (``pip install 'centernet[serve]'``).

    detector = centernet.Detector.from_checkpoint("runs/demo/best.pt")
    centernet.serve.serve(detector, ServeOptions(max_batch=8), port=8000)
"""

from .app import ServeOptions, create_app, model_info
from .batching import BatcherStoppedError, BatchInfo, DynamicBatcher, QueueFullError
from .server import background_server, free_port, serve, server_process

__all__ = ["ServeOptions", "create_app", "model_info", "serve", "background_server", "server_process", "free_port", "DynamicBatcher",
           "BatchInfo", "QueueFullError", "BatcherStoppedError"]
