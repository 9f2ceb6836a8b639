"""Running the app: in the foreground under uvicorn (``centernet serve``), or on a background thread
for tests and scripts (``background_server``)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Iterator

from ..engine.predict import Detector
from .app import ServeOptions, create_app


def _uvicorn_server(detector: Detector, options: ServeOptions, host: str, port: int, log_level: str):
    import uvicorn

    config = uvicorn.Config(create_app(detector, options), host=host, port=port, log_level=log_level,
                            # on SIGTERM / Ctrl-C: stop accepting, let requests in flight finish
                            timeout_graceful_shutdown=options.timeout_s + 5)
    return uvicorn.Server(config)


def serve(detector: Detector, options: ServeOptions | None = None, host: str = "127.0.0.1",
          port: int = 8000, log_level: str = "info") -> None:
    """Serve ``detector`` at ``http://host:port`` until SIGTERM or Ctrl-C (which let the requests in
    flight finish). When the port cannot be bound, uvicorn logs why and exits with status 3."""
    _uvicorn_server(detector, options or ServeOptions(), host, port, log_level).run()


@contextlib.contextmanager
def background_server(detector: Detector, options: ServeOptions | None = None, host: str = "127.0.0.1",
                      port: int = 0, log_level: str = "warning") -> Iterator[str]:
    """The server on a thread of this process, on a free port (``port=0``); yields its base URL
    (``http://127.0.0.1:PORT``) once it accepts requests, and stops it gracefully on exit."""
    server = _uvicorn_server(detector, options or ServeOptions(), host, port, log_level)
    thread = threading.Thread(target=server.run, name="centernet-serve", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise OSError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()
    try:
        yield f"http://{bound[0]}:{bound[1]}"
    finally:
        server.should_exit = True
        thread.join()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def server_process(serve_args: list[str], host: str = "127.0.0.1", port: int | None = None,
                   startup_timeout_s: float = 120.0, **popen_kwargs) -> Iterator[tuple[str, subprocess.Popen]]:
    """``centernet serve SERVE_ARGS`` as a child process on ``host`` and a free port; yields
    ``(base URL, process)`` once ``GET /health`` answers, and on exit stops it with SIGTERM (the
    graceful shutdown) if it still runs. For the load test, the screenshot script and the tests."""
    port = port or free_port(host)
    command = [sys.executable, "-m", "centernet", "serve", *serve_args, "--host", host, "--port", str(port)]
    process = subprocess.Popen(command, **popen_kwargs)
    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"`{' '.join(command)}` exited with status {process.returncode} before serving")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"`{' '.join(command)}` did not answer on {url} "
                                       f"within {startup_timeout_s:g} s") from None
                time.sleep(0.1)
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
