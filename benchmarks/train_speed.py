"""Training speed and memory of one model on this machine: images/s of a full training step
(forward, CenterNet loss, backward, Adam) and the process's peak resident memory.

    .venv/bin/python benchmarks/train_speed.py --model centernet_dla34 --input-size 512 --batch-size 4

The batch is random images with targets built from random boxes (the data pipeline is measured
separately), so the figure is the model's step alone.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time

import numpy as np
import torch

from centernet import create_model
from centernet.losses import CenterNetLoss
from centernet.targets import build_targets


def random_batch(batch_size: int, size: int, num_classes: int, stride: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = size // stride
    targets = []
    for _ in range(batch_size):
        n = int(rng.integers(1, 20))
        xy = rng.uniform(0, size * 0.8, (n, 2))
        wh = rng.uniform(8, size * 0.5, (n, 2))
        boxes = np.concatenate([xy, np.minimum(xy + wh, size - 1)], 1).astype(np.float32)
        labels = rng.integers(0, num_classes, n)
        targets.append(build_targets(boxes, labels, num_classes, (out, out), stride=stride))
    batch = {k: torch.from_numpy(np.stack([t[k] for t in targets])) for k in targets[0]}
    images = torch.from_numpy(rng.standard_normal((batch_size, 3, size, size)).astype(np.float32))
    return images, batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="centernet_dla34")
    parser.add_argument("--input-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--num-classes", type=int, default=80)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=args.num_classes).train()
    criterion = CenterNetLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images, targets = random_batch(args.batch_size, args.input_size, args.num_classes, model.stride)
    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        losses = criterion(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    print(f"{args.model} train step at {args.input_size}x{args.input_size}, batch {args.batch_size}: "
          f"{step_s:.2f} s/step (median of {args.steps}), {args.batch_size / step_s:.2f} images/s, "
          f"peak RSS {peak_mib:,.0f} MiB")


if __name__ == "__main__":
    main()
