"""Where an ONNX graph of a zoo row spends its time in onnxruntime, fp32 against INT8, per operator.

    .venv/bin/python benchmarks/int8_profile.py --model centernet_mbv3_large --size 512 --threads 2

Exports the row (random weights: speed does not depend on them) with ``export_onnx``, quantizes it
as the benchmarks do (``quantize_for_timing``: min-max, calibrated on a few synthetic scenes), runs each graph ``--repeat``
times after a warm-up with onnxruntime's profiler on, and prints the median call time and the
time per operator type (the kernels onnxruntime actually ran, after its graph fusions: an INT8
convolution shows as QLinearConv, one left in float as Conv or FusedConv) as ms per call and
share of the call. ``--nodes N`` also lists the N slowest nodes of the INT8 graph.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def profile(path: Path, images, threads: int, repeat: int, folder: str):
    """(median ms per call, {op type: ms per call}, {node name: (op type, ms per call)})."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(folder) / path.stem)
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session.run(None, {"images": images})  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        session.run(None, {"images": images})
        times.append(time.perf_counter() - start)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op, per_node = defaultdict(float), defaultdict(float)
    op_of = {}
    runs = 0
    for event in events:
        if event.get("cat") == "Session" and event.get("name") == "model_run":
            runs += 1
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        op = event["args"]["op_name"]
        node = event["name"][: -len("_kernel_time")]
        per_op[op] += event["dur"] / 1000
        per_node[node] += event["dur"] / 1000
        op_of[node] = op
    runs = max(runs, 1)  # the warm-up is profiled too: every figure is per call
    return (1000 * statistics.median(times), {op: ms / runs for op, ms in per_op.items()},
            {node: (op_of[node], ms / runs) for node, ms in per_node.items()})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="centernet_mbv3_large")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=0, help="also list the N slowest nodes of the INT8 graph")
    args = parser.parse_args()

    import numpy as np
    import torch

    from centernet import create_model
    from centernet.engine.benchmark import quantize_for_timing
    from centernet.export import export_onnx

    torch.manual_seed(0)
    images = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        fp32 = export_onnx(create_model(args.model), Path(folder) / "fp32.onnx", input_size=(args.size, args.size))
        int8 = quantize_for_timing(fp32, folder)  # as centernet benchmark and paddle_speed.py time it
        (fp32_ms, fp32_ops, _), (int8_ms, int8_ops, int8_nodes) = (
            profile(path, images, args.threads, args.repeat, folder) for path in (fp32, int8))
    print(f"{args.model}, batch 1, {args.size}x{args.size}, {args.threads} threads, median of {args.repeat}: "
          f"fp32 {fp32_ms:.0f} ms, INT8 {int8_ms:.0f} ms per call")
    print("| operator | fp32 ms | fp32 share | INT8 ms | INT8 share |")
    print("| --- | ---: | ---: | ---: | ---: |")
    fp32_total, int8_total = sum(fp32_ops.values()), sum(int8_ops.values())
    for op in sorted(set(fp32_ops) | set(int8_ops), key=lambda o: -max(fp32_ops.get(o, 0), int8_ops.get(o, 0))):
        a, b = fp32_ops.get(op, 0.0), int8_ops.get(op, 0.0)
        if max(a / fp32_total, b / int8_total) < 0.005:
            continue
        print(f"| {op} | {a:.1f} | {100 * a / fp32_total:.1f} % | {b:.1f} | {100 * b / int8_total:.1f} % |")
    print(f"| all kernels | {fp32_total:.1f} | | {int8_total:.1f} | |")
    for node, (op, ms) in sorted(int8_nodes.items(), key=lambda item: -item[1][1])[: args.nodes]:
        print(f"  {ms:7.2f} ms  {op:<22} {node}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
