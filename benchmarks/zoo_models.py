"""The zoo table: parameters, FLOPs and CPU latency of every registered model at 512x512.

    .venv/bin/python benchmarks/zoo_models.py --threads 2 --repeat 5 [--models centernet_r50 ...]

Per model (80 classes, eval mode, batch 1, float32): parameters (all ``nn.Parameter``s, i.e.
Paddle's count without BatchNorm running statistics), GFLOPs counted by
``torch.utils.flop_counter.FlopCounterMode`` (one multiply-add = 2 FLOPs; convolutions, matmuls
and transposed convolutions; the bilinear sampling of a deformable conv is not counted, its
matmul is), and the median forward time of ``--repeat`` runs after one warm-up, both wall clock
and this process's CPU time (the CPU time is the steadier figure on a shared machine).
"""

import argparse
import os
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from centernet import create_model, list_models


def measure(name, repeat, size=512):
    model = create_model(name).eval()
    images = torch.randn(1, 3, size, size)
    params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            model(images)
        model(images)  # warm-up
        wall, cpu = [], []
        for _ in range(repeat):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            model(images)
            wall.append(time.perf_counter() - start_wall)
            cpu.append(time.process_time() - start_cpu)
    return params, counter.get_total_flops() / 1e9, 1000 * statistics.median(wall), \
        1000 * statistics.median(cpu)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--models", nargs="*", default=None, help="default: every zoo model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'model':24} {'params':>12} {'GFLOPs':>8} {'wall ms':>9} {'cpu ms':>9}")
    for name in args.models or list_models():
        params, gflops, wall_ms, cpu_ms = measure(name, args.repeat)
        print(f"{name:24} {params:>12,} {gflops:>8.1f} {wall_ms:>9.0f} {cpu_ms:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
