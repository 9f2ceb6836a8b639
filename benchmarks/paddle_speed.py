"""Our CPU latency against PaddleDetection's, the six zoo rows measured in the same run.

    .venv/bin/python benchmarks/paddle_speed.py --threads 2 --repeat 10 [--batch 8] [--models centernet_dla34 ...]

For each model, one after the other (so both see the same machine load), each in fresh processes:
ours eager (default settings), ours fastest (``optimize_for_inference``, ``keep_freed_memory``,
``OMP_WAIT_POLICY=PASSIVE``), onnxruntime, and onnxruntime on the INT8 graph of ``centernet export
--quantize int8`` (calibrated on a few synthetic scenes: the ranges do not change the speed), each
from the normalised batch to the top-100 boxes; then, in a process of the Paddle reference venv (also ``OMP_WAIT_POLICY=PASSIVE``)
(``.venv-paddle``, made by ``scripts/setup_paddle_env.sh``), PaddleDetection's own model from
``benchmarks/paddle_reference.py`` with its ``CenterNetPostProcess`` (top-100 boxes), run by Paddle
Inference (static graph, IR optimisations, oneDNN) and by dygraph in eval mode. Same input
(batch 1, 512x512, 80 classes), same thread count, one warm-up call, median of ``--repeat`` calls in
wall time and process CPU time. The ratios are our fastest exact path, and our INT8 graph, over
Paddle's best (the quickest of Paddle Inference on the whole detector, on the model alone and
dygraph); below 1 we are faster.

``--batch N`` above 1: PaddleDetection's ``CenterNetPostProcess`` decodes one image only (its
``_topk`` reshapes the heatmap as batch 1), so Paddle runs the model alone (Paddle Inference, maps
only) on the batch and our rows still include the decode; eager and dygraph are left out (never
the quickest, and minutes per call at batch 8). Times are per image (the call's time / N).
oneDNN is used where Paddle Inference runs the graph with it, else Paddle's plain CPU kernels
(the JSON row says which). Rerun the Paddle side alone with:

    .venv-paddle/bin/python benchmarks/paddle_speed.py --paddle-worker centernet_dla34
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PADDLE_PYTHON = HERE.parent / ".venv-paddle" / "bin" / "python"
ZOO = ["centernet_dla34", "centernet_r50", "centernet_mbv1", "centernet_mbv3_small",
       "centernet_mbv3_large", "centernet_shufflenetv2"]


def _median_times(fn, repeat):
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeat):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu)


# -- the Paddle side (runs in .venv-paddle; imports paddle and ppdet, never torch) ----------------

def paddle_worker(name, threads, repeat, size, onednn=True, batch=1):
    import numpy as np
    import paddle
    from paddle import inference

    sys.path.insert(0, str(HERE))
    from paddle_reference import build  # the zoo row built from paddledet's own classes
    from ppdet.modeling.post_process import CenterNetPostProcess

    class Detections(paddle.nn.Layer):
        """images -> ppdet's top-100 boxes (class, score, x1, y1, x2, y2), one image per call;
        with ``post_process=False`` the raw maps only."""

        def __init__(self, model, post_process=True):
            super().__init__()
            self.model = model
            self.post_process = post_process
            self.post = CenterNetPostProcess(max_per_img=100, down_ratio=4, regress_ltrb=False)

        def forward(self, images):
            maps = self.model(images)
            if not self.post_process:
                return maps["heatmap"], maps["size"], maps["offset"]
            im_shape = paddle.cast(paddle.shape(images)[2:], "float32").reshape([1, 2])
            return self.post(paddle.nn.functional.sigmoid(maps["heatmap"]), maps["size"],
                             maps["offset"], im_shape, paddle.ones([1, 2], "float32"))[0]

    def inference_runner(layer, folder, onednn):
        """A Paddle Inference predictor of ``layer`` (saved as a static graph) as a function."""
        prefix = os.path.join(folder, "model")
        if not os.path.exists(prefix + ".pdiparams"):
            static = paddle.jit.to_static(
                layer, input_spec=[paddle.static.InputSpec([batch, 3, size, size], "float32", "images")],
                full_graph=True)
            paddle.jit.save(static, prefix)
        model_file = next(p for p in (prefix + ".json", prefix + ".pdmodel") if os.path.exists(p))
        config = inference.Config(model_file, prefix + ".pdiparams")
        config.disable_gpu()
        config.switch_ir_optim(True)
        config.set_cpu_math_library_num_threads(threads)
        config.enable_onednn() if onednn else config.disable_onednn()
        config.disable_glog_info()
        predictor = inference.create_predictor(config)
        handle = predictor.get_input_handle(predictor.get_input_names()[0])

        def run():
            handle.copy_from_cpu(images)
            predictor.run()
            return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()

        return run

    paddle.set_device("cpu")
    model = build(name)
    images = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype("float32")
    result = {"model": name, "paddle": paddle.__version__}
    if batch == 1:  # ppdet's post-process decodes one image (see the module docstring)
        with paddle.no_grad():
            tensor = paddle.to_tensor(images)
            detections = Detections(model).eval()
            result["dygraph_wall_ms"], result["dygraph_cpu_ms"] = _median_times(lambda: detections(tensor), repeat)

    # Paddle Inference on the whole detector, and on the model alone (its best case: oneDNN
    # runs some models only without ppdet's post-process); oneDNN where it runs, else without.
    for key, post_process in (("inference", True), ("inference_maps", False))[0 if batch == 1 else 1:]:
        with tempfile.TemporaryDirectory() as folder:
            layer = Detections(model, post_process).eval()
            for use_onednn in ((True, False) if onednn else (False,)):
                try:
                    run = inference_runner(layer, folder, use_onednn)
                    wall, cpu = _median_times(run, repeat)
                    result[f"{key}_wall_ms"], result[f"{key}_cpu_ms"] = wall / batch, cpu / batch
                    result[f"{key}_onednn"] = use_onednn
                    break
                except (NotImplementedError, RuntimeError, ValueError) as error:
                    result[f"{key}_onednn_error"] = str(error).strip().splitlines()[0][:160]
    print("RESULT " + json.dumps(result), flush=True)


# -- our side and the comparison (runs in .venv) --------------------------------------------------

def _worker_result(python, arguments, threads, repeat, size, passive=False, batch=1):
    """Run this script as a worker (``arguments``) in a fresh ``python`` process; its RESULT.
    ``passive``: OpenMP threads sleep instead of spinning while they wait (OMP_WAIT_POLICY)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               GLOG_minloglevel="2")
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    command = [str(python), __file__, *arguments, "--threads", str(threads), "--repeat", str(repeat),
               "--size", str(size), "--batch", str(batch)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{' '.join(arguments)} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def measure_paddle(name, threads, repeat, size, batch=1):
    """Paddle's side; oneDNN's graph passes crash (SIGSEGV) on some models, then without it."""
    try:
        return _worker_result(PADDLE_PYTHON, ["--paddle-worker", name], threads, repeat, size, passive=True,
                              batch=batch)
    except RuntimeError as error:
        result = _worker_result(PADDLE_PYTHON, ["--paddle-worker", name, "--no-onednn"], threads,
                                repeat, size, passive=True, batch=batch)
        crash = [line for line in str(error).splitlines() if "FatalError" in line or "Error:" in line]
        result["onednn_crashed"] = (crash or ["the worker failed"])[-1].strip()[:160]
        return result


def measure_ours(name, threads, repeat, size, batch=1):
    """Eager as a process starts (OpenMP's default spin-wait; batch 1 only); the fastest path,
    onnxruntime and the INT8 graph in another process with passive OpenMP waiting (see
    docs/benchmarks.md)."""
    eager = {} if batch > 1 else _worker_result(
        sys.executable, ["--ours-worker", name, "--backends", "eager"], threads, repeat, size)
    fast = _worker_result(sys.executable, ["--ours-worker", name, "--backends", "fastest", "onnxruntime",
                                           "onnxruntime-int8"], threads, repeat, size, passive=True, batch=batch)
    return {**eager, **fast}


def ours_worker(name, threads, repeat, size, backends, batch=1):
    """Ours in a fresh process, ``backends`` in order (eager first sees the allocator as the
    process starts; the fastest path sets keep_freed_memory)."""
    import torch

    from centernet import create_model
    from centernet.engine.benchmark import measure_latency

    torch.manual_seed(0)
    timings = measure_latency(create_model(name), (size, size), batch_sizes=(batch,), backends=backends,
                              repeat=repeat, threads=threads)
    print("RESULT " + json.dumps({t.what: (t.wall_ms / batch, t.cpu_ms / batch) for t in timings}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=ZOO)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1, help="images per call (times are per image)")
    parser.add_argument("--paddle-worker", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--ours-worker", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--backends", nargs="+", default=["eager", "fastest", "onnxruntime"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--no-onednn", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    if args.paddle_worker:
        paddle_worker(args.paddle_worker, args.threads, args.repeat, args.size, not args.no_onednn, args.batch)
        return 0
    if args.ours_worker:
        ours_worker(args.ours_worker, args.threads, args.repeat, args.size, args.backends, args.batch)
        return 0
    if not PADDLE_PYTHON.exists():
        raise SystemExit(f"{PADDLE_PYTHON}: missing; make the Paddle venv with scripts/setup_paddle_env.sh")

    from centernet.engine.benchmark import machine_description

    print(f"batch {args.batch}, {args.size}x{args.size}, median of {args.repeat}; {machine_description(args.threads)}")
    print("ms per image as wall / CPU time; Paddle Inference on the whole detector and on the model "
          "alone (maps); ratios = ours fastest / Paddle's best and ours INT8 / Paddle's best, in wall "
          "and in CPU time")
    ours_keys = ("eager", "fastest", "onnxruntime", "onnxruntime-int8")
    paddle_keys = ("inference", "inference_maps", "dygraph")
    columns = ["ours eager", "ours fastest", "onnxruntime", "onnxruntime INT8", "Paddle Inf.",
               "Paddle Inf. maps", "Paddle dygraph"]
    print(f"{'model':<24}" + "".join(f"{c:>17}" for c in columns)
          + "".join(f"{c:>14}" for c in ("fastest wall", "cpu", "INT8 wall", "cpu")))
    rows = []
    for name in args.models:
        ours = measure_ours(name, args.threads, args.repeat, args.size, args.batch)
        paddle = measure_paddle(name, args.threads, args.repeat, args.size, args.batch)
        best = [min(paddle[f"{key}_{unit}_ms"] for key in paddle_keys if f"{key}_{unit}_ms" in paddle)
                for unit in ("wall", "cpu")]
        ratios = {f"ratio_{what}_{unit}": ours[key][i] / best[i] for what, key in
                  (("fastest", "fastest"), ("int8", "onnxruntime-int8")) for i, unit in enumerate(("wall", "cpu"))}
        rows.append({"model": name, "batch": args.batch, **{f"{k}_ms": v for k, v in ours.items()}, **paddle,
                     **ratios, "load": os.getloadavg()[0]})
        cells = [ours.get(key) for key in ours_keys] + [
            (paddle[f"{key}_wall_ms"], paddle[f"{key}_cpu_ms"]) if f"{key}_wall_ms" in paddle else None
            for key in paddle_keys]
        print(f"{name:<24}" + "".join(f"{c[0]:>9.0f} /{c[1]:>6.0f}" if c else f"{'-':>17}" for c in cells)
              + "".join(f"{r:>14.2f}" for r in ratios.values()), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        from centernet.io import write_json

        write_json(args.json, rows, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
