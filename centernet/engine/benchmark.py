"""Speed and memory on this machine: inference latency of PyTorch eager, the fastest exact PyTorch
path, onnxruntime and onnxruntime on the INT8 graph; the training data pipeline against the
training step.

    centernet benchmark --model centernet_dla34 --threads 2
    from centernet.engine.benchmark import measure_latency, measure_pipeline

Inference is timed end to end from the normalised batch to the top-100 boxes (model + decode;
the ONNX graph has the decode inside), after one warm-up call, as the median and 90th percentile
of ``repeat`` calls, in wall-clock time and in this process's CPU time. On a machine shared with
other work the CPU time is the steadier figure: wall time then includes waiting for a core. Peak
memory is the largest resident-set growth seen during the timed calls (sampled every
millisecond), or the CUDA allocator's peak on a GPU.

Order matters on CPU: eager runs first, in the process as it starts; the fastest path then sets
:func:`~centernet.allocator.keep_freed_memory`, which lasts for the process.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

BACKENDS = ("eager", "fastest", "onnxruntime", "onnxruntime-int8")
DEFAULT_BACKENDS = BACKENDS


@dataclass
class Timing:
    """One measurement: ``what`` (a backend, ``pipeline`` or ``train step``) on ``batch`` images."""

    what: str
    batch: int
    wall_ms: float  # median
    wall_p90_ms: float
    cpu_ms: float  # median process CPU time per call
    images_per_s: float  # batch / median wall time
    peak_mib: float  # peak memory growth during the calls

    def row(self) -> str:
        return (f"{self.what:<20} {self.batch:>5} {self.wall_ms:>10.1f} {self.wall_p90_ms:>10.1f} "
                f"{self.cpu_ms:>10.1f} {self.images_per_s:>9.2f} {self.peak_mib:>9.0f}")


HEADER = f"{'':<20} {'batch':>5} {'wall ms':>10} {'p90 ms':>10} {'cpu ms':>10} {'images/s':>9} {'peak MiB':>9}"


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_memory(device: torch.device):
    """Yields a dict whose ``"mib"`` holds, on exit, the peak memory growth inside the block."""
    result = {"mib": float("nan")}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        result["mib"] = (torch.cuda.max_memory_allocated(device) - start) / 2**20
        return
    if not os.path.exists("/proc/self/statm"):
        yield result
        return
    start = peak = _resident_bytes()
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.wait(0.001):
            peak = max(peak, _resident_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        done.set()
        sampler.join()
        result["mib"] = (max(peak, _resident_bytes()) - start) / 2**20


def time_calls(fn: Callable[[], object], repeat: int, batch: int, what: str,
               device: torch.device = torch.device("cpu"), warmup: int = 1) -> Timing:
    """Time ``fn()`` (``warmup`` untimed calls first); see the module docstring."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    wall, cpu = [], []
    with peak_memory(device) as memory:
        for _ in range(repeat):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            fn()
            sync()
            wall.append(time.perf_counter() - start_wall)
            cpu.append(time.process_time() - start_cpu)
    median = statistics.median(wall)
    return Timing(what, batch, 1000 * median, 1000 * float(np.percentile(wall, 90)),
                  1000 * statistics.median(cpu), batch / median, memory["mib"])


def _onnx_session(model: torch.nn.Module, input_size: tuple[int, int], threads: int | None,
                  device: torch.device, folder: str, int8: bool = False):
    import onnxruntime

    from ..export import export_onnx

    path = export_onnx(model, Path(folder) / "model.onnx", input_size=input_size)
    if int8:
        path = quantize_for_timing(path, folder)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return onnxruntime.InferenceSession(str(path), options, providers=providers)


INT8_CALIBRATION_IMAGES = 4


def quantize_for_timing(path: str | Path, folder: str | Path) -> Path:
    """``folder/model_int8.onnx``: the INT8 copy of the exported graph ``path`` that the benchmarks
    time. Latency does not depend on the calibrated ranges (the same integer graph runs whatever
    its scales), so a few synthetic scenes and min-max, the quickest calibrator, do here."""
    from ..export import quantize_onnx

    images, _ = _synthetic_split(Path(folder) / "calibration", INT8_CALIBRATION_IMAGES)
    return quantize_onnx(path, Path(folder) / "model_int8.onnx", images,
                         calibration_count=INT8_CALIBRATION_IMAGES, calibration_method="minmax")


def measure_latency(model: torch.nn.Module, input_size: tuple[int, int] = (512, 512),
                    batch_sizes: Sequence[int] = (1, 8), backends: Iterable[str] = DEFAULT_BACKENDS,
                    repeat: int = 10, threads: int | None = None, device: str = "cpu",
                    half: torch.dtype = torch.float16) -> list[Timing]:
    """Latency of ``model`` (+ decode) per backend and batch size, eager first.

    ``fastest`` is :func:`~centernet.models.fuse.optimize_for_inference` (in ``half`` precision
    on a GPU); ``onnxruntime`` runs the graph of :func:`~centernet.export.export_onnx` (fixed
    size, dynamic batch) with ``threads`` intra-op threads; ``onnxruntime-int8`` runs that graph
    after :func:`~centernet.export.quantize_onnx` (what ``centernet export --quantize int8``
    writes; calibrated on a few synthetic scenes, which sets its ranges but not its speed).
    """
    from ..export import DetectionGraph
    from ..allocator import keep_freed_memory
    from ..models.fuse import optimize_for_inference

    device = torch.device(device)
    if threads:
        torch.set_num_threads(threads)
    model = model.eval()
    height, width = input_size
    images = {b: torch.randn(b, 3, height, width, generator=torch.Generator().manual_seed(b))
              for b in batch_sizes}
    timings = []
    with tempfile.TemporaryDirectory() as folder, torch.inference_mode():
        for backend in backends:
            if backend == "eager":
                graph = DetectionGraph(model.to(device))
                run = lambda x: graph(x.to(device))  # noqa: E731
            elif backend == "fastest":
                if device.type == "cpu":
                    keep_freed_memory()
                fast = optimize_for_inference(model, dtype=half if device.type == "cuda" else None)
                graph = DetectionGraph(fast.to(device))
                run = lambda x: graph(x.to(device))  # noqa: E731
            elif backend in ("onnxruntime", "onnxruntime-int8"):
                session = _onnx_session(model.cpu(), input_size, threads, device, folder,
                                        int8=backend == "onnxruntime-int8")
                run = lambda x: session.run(None, {"images": x.numpy()})  # noqa: E731
            else:
                raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
            for batch in batch_sizes:
                timings.append(time_calls(lambda: run(images[batch]), repeat, batch, backend, device))
    return timings


def _synthetic_split(folder: str | Path, num_images: int) -> tuple[Path, Path]:
    from ..data.synthetic import generate_dataset

    paths = generate_dataset(folder, num_train=num_images, num_val=0, min_side=480, max_side=640)
    return paths["train_images"], paths["train_ann"]


def measure_pipeline(model_name: str = "centernet_dla34", input_size: tuple[int, int] = (512, 512),
                     workers: int | None = None, batch_size: int = 4, num_images: int = 64,
                     train_steps: int = 3, threads: int | None = None) -> list[Timing]:
    """Training data pipeline against the training step, on synthetic 480-640 px JPEG scenes.

    ``pipeline``: images/s that the training ``DataLoader`` (JPEG decoding, random affine to
    ``input_size``, colour augmentation, targets) delivers with ``workers`` processes (the
    config's default when None), timed after its first batch. ``train step``: images/s of
    ``Trainer.train_step`` (forward, loss, backward, Adam) on ``batch_size`` images of
    ``model_name`` (with the data's 7 classes).
    """
    from torch.utils.data import DataLoader

    from ..config import Config
    from ..data.coco import collate
    from .trainer import Trainer

    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as folder:
        images, ann = _synthetic_split(Path(folder) / "data", num_images)
        config = Config()
        config.override("model", name=model_name)
        config.override("data", train_images=str(images), train_ann=str(ann), input_size=tuple(input_size),
                        workers=workers, check=False)
        config.override("train", batch_size=batch_size, device="cpu")
        trainer = Trainer(config, Path(folder) / "run", progress=False)
        workers = config.data.workers
        loader = DataLoader(trainer.train_set, batch_size=batch_size, shuffle=True, num_workers=workers,
                            collate_fn=collate, persistent_workers=workers > 0)
        batches = iter(loader)
        first = next(batches)  # worker start-up is not part of the rate
        remaining = len(loader) - 1
        pipeline = time_calls(lambda: next(batches), remaining, batch_size,
                              f"pipeline ({workers} workers)", warmup=0)
        trainer.model.train()
        step = time_calls(lambda: trainer.train_step([first]), train_steps, batch_size, "train step")
    return [pipeline, step]


def machine_description(threads: int | None = None) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import onnxruntime

    return (f"{cpu}, {os.cpu_count()} cores, {threads or torch.get_num_threads()} threads, "
            f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
            f"load average {os.getloadavg()[0]:.1f}")


def run_benchmark(model_name: str, input_size: tuple[int, int] = (512, 512),
                  batch_sizes: Sequence[int] = (1, 8), threads: int | None = None, repeat: int = 10,
                  backends: Iterable[str] | None = None, pipeline: bool = True,
                  device: str = "cpu") -> list[Timing]:
    """`centernet benchmark`: print (and return) the latency table and the pipeline comparison.
    ``backends`` default: all of :data:`BACKENDS` on a CPU; on a GPU all but the INT8 graph (an
    x86 CPU format: onnxruntime's CUDA provider would run it through float fallbacks)."""
    from ..models import build_model

    torch.manual_seed(0)
    model = build_model(model_name)
    if backends is None:
        backends = [b for b in BACKENDS if device == "cpu" or b != "onnxruntime-int8"]
    print(f"{model_name} at {input_size[0]}x{input_size[1]} on {device}: {machine_description(threads)}")
    if device == "cpu" and os.getloadavg()[0] >= (os.cpu_count() or 1) and "OMP_WAIT_POLICY" not in os.environ:
        print("note: the machine is busy; OpenMP threads that spin while they wait for a descheduled "
              "peer inflate the PyTorch figures (run with OMP_WAIT_POLICY=PASSIVE to avoid it)")
    print(HEADER)
    timings = []
    for timing in measure_latency(model, input_size, batch_sizes, backends, repeat, threads, device):
        print(timing.row(), flush=True)
        timings.append(timing)
    if pipeline:
        pipe, step = measure_pipeline(model_name, input_size, threads=threads)
        for timing in (pipe, step):
            print(timing.row())
        timings += [pipe, step]
        print(f"data pipeline / training step: {pipe.images_per_s / step.images_per_s:.1f}x "
              f"(the pipeline keeps up when this is above 1)")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return timings
