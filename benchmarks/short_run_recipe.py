"""Learning per image seen, from scratch: PaddleDetection's recipe against the short-run recipe.

Trains the same row on the same data for the same number of images with each recipe below (through
``centernet train``, the command a user runs), then plots val AP50 against images seen into one
figure and prints the table. A recipe is a set of `centernet train` flags on top of the common ones.

    .venv/bin/python -m centernet synth --out data/hard300 --train 300 --val 100 --seed 1
    .venv/bin/python benchmarks/short_run_recipe.py --data data/hard300 --out runs/recipes \\
        --recipes paddle short --epochs 30 --input-size 256 --figure docs/short_run_recipe.png

A recipe whose run folder already holds a finished metrics.csv is not trained again. ``--compare
LABEL=METRICS_CSV`` adds the curve of a run made elsewhere on the same data, e.g. both trainers of
``benchmarks/train_vs_paddle.py`` (PaddleDetection's recipe with its milestones at epochs 20 and 26
of 30), as in docs/benchmarks.md::

    .venv/bin/python benchmarks/short_run_recipe.py --data data/hard300 --out runs/recipes --recipes short \
        --epochs 30 --input-size 256 --head-planes 256 --figure docs/short_run_recipe.png \
        --compare "PaddleDetection's trainer, its recipe=runs/vs_paddle/paddle_seed0/metrics.csv" \
                  "ours, Paddle's recipe=runs/vs_paddle/ours_seed0/metrics.csv"
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

RECIPES = {
    # PaddleDetection's (configs/centernet/_base_/optimizer_140e.yml): Adam 5e-4, x0.1 after 65 %
    # and 85 % of the epochs (90 and 120 of 140), no warm-up; made for 140 epochs from ImageNet weights.
    "paddle": ["--lr", "5e-4", "--schedule", "step"],
    # The short-run recipe: 4x the peak rate, reached by a one-epoch linear warm-up, then a cosine
    # to 1 % of it at the last step.
    "short": ["--lr", "2e-3", "--schedule", "cosine", "--warmup-epochs", "1"],
    # Two neighbours of it, to show where the peak sits.
    "short_lr1e-3": ["--lr", "1e-3", "--schedule", "cosine", "--warmup-epochs", "1"],
    "short_lr4e-3": ["--lr", "4e-3", "--schedule", "cosine", "--warmup-epochs", "1"],
}


def read_rows(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--recipes", nargs="+", default=["paddle", "short"], choices=sorted(RECIPES))
    parser.add_argument("--model", default="centernet_mbv3_small")
    parser.add_argument("--head-planes", type=int, default=256)
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--eval-interval", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", type=Path, help="default: OUT/short_run_recipe.png")
    parser.add_argument("--compare", nargs="*", default=[], metavar="LABEL=METRICS_CSV",
                        help="curves of runs made elsewhere on the same data")
    args = parser.parse_args(argv)

    curves = {}
    for name in args.recipes:
        run = args.out / name
        metrics = run / "metrics.csv"
        done = metrics.exists() and any(r.get("epoch") == args.epochs for r in read_rows(metrics))
        if not done:
            subprocess.run([sys.executable, "-m", "centernet", "train", "--data", str(args.data), "--model", args.model,
                            "--head-planes", str(args.head_planes), "--input-size", str(args.input_size),
                            "--batch-size", str(args.batch_size), "--epochs", str(args.epochs),
                            "--eval-interval", str(args.eval_interval), "--seed", str(args.seed),
                            "--run-dir", str(run), "--quiet", "--no-tensorboard", *RECIPES[name]], check=True)
        curves[f"{name}, seed {args.seed}: {' '.join(RECIPES[name])}"] = read_rows(metrics)
    for item in args.compare:
        label, _, path = item.rpartition("=")
        if not label or not Path(path).is_file():
            raise SystemExit(f"--compare {item!r}: expected LABEL=METRICS_CSV with an existing file")
        curves[label] = read_rows(Path(path))

    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images_per_epoch = len(json.loads((args.data / "train" / "annotations.json").read_text())["images"])
    figure, axis = plt.subplots(figsize=(6.5, 4))
    for name, rows in curves.items():
        validated = [r for r in rows if "AP50" in r]
        axis.plot([r["epoch"] * images_per_epoch for r in validated], [100 * r["AP50"] for r in validated], "o-",
                  label=name)
    axis.set(xlabel="training images seen", ylabel="val AP50 (%)",
             title=f"{args.model} from scratch, {args.input_size}px, batch {args.batch_size}: {args.data.name}")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path = args.figure or args.out / "short_run_recipe.png"
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=110)
    os.replace(tmp, path)

    epochs = [int(r["epoch"]) for r in next(iter(curves.values())) if "AP50" in r]
    print("| recipe | " + " | ".join(f"{e * images_per_epoch:,} images" for e in epochs) + " |")
    print("| --- |" + " --- |" * len(epochs))
    for name, rows in curves.items():
        print(f"| {name} (val AP50 / AP, %) | " + " | ".join(f"{100 * r['AP50']:.1f} / {100 * r['AP']:.1f}"
                                                            for r in rows if "AP50" in r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
