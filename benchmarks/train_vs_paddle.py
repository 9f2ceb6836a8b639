"""Our trainer against PaddleDetection's own, side by side: same data, row, recipe and budget.

Runs ``centernet train`` (this venv) and PaddleDetection 2.6.0's ``Trainer`` (the reference venv,
through ``benchmarks/paddle_train_reference.py train``) from scratch on one COCO folder laid out as
``centernet synth`` writes it, with the same row, input size, head width, batch, Adam learning
rate, step schedule (x0.1 at the milestones), epochs and validation interval; no EMA, no
pretrained weights. Each side writes its metrics.csv (losses per epoch, COCO metrics at each
validation) under ``--out``; this script then draws the two learning curves into one figure and
prints a table of val AP50/AP per validated epoch.

Example (the figures in docs/benchmarks.md)::

    .venv/bin/python -m centernet synth --out data/hard300 --train 300 --val 100 --seed 1
    .venv/bin/python benchmarks/train_vs_paddle.py --data data/hard300 --out runs/vs_paddle \\
        --input-size 256 --epochs 30 --milestones 20 26 --seeds 0 1

``--only ours|paddle`` runs one side; an existing side (its metrics.csv complete) is not rerun.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PADDLE_PYTHON = ROOT / ".venv-paddle" / "bin" / "python"


def read_metrics(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as handle:
        return [{key: float(value) for key, value in row.items() if value not in ("", None)}
                for row in csv.DictReader(handle)]


def complete(path: Path, epochs: int) -> bool:
    return path.exists() and any(row.get("epoch") == epochs for row in read_metrics(path))


def run_ours(args, seed: int, out: Path) -> None:
    config = {
        "model": {"name": args.model, "head_planes": args.head_planes},
        "data": {"train_images": str(args.data / "train" / "images"), "train_ann": str(args.data / "train" / "annotations.json"),
                 "val_images": str(args.data / "val" / "images"), "val_ann": str(args.data / "val" / "annotations.json"),
                 "input_size": [args.input_size, args.input_size], "workers": args.workers},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "milestones": args.milestones,
                  "schedule_epochs": args.epochs, "eval_interval": args.eval_interval, "seed": seed,
                  "tensorboard": False},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    subprocess.run([sys.executable, "-m", "centernet", "train", "--config", str(out / "recipe.yml"),
                    "--run-dir", str(out / "run"), "--quiet"], check=True)
    (out / "metrics.csv").write_bytes((out / "run" / "metrics.csv").read_bytes())


def run_paddle(args, seed: int, out: Path) -> None:
    if not PADDLE_PYTHON.exists():
        raise SystemExit(f"no reference venv at {PADDLE_PYTHON}: run scripts/setup_paddle_env.sh")
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(PADDLE_PYTHON), str(ROOT / "benchmarks" / "paddle_train_reference.py"), "train", args.model,
                    "--data", str(args.data), "--out", str(out), "--input-size", str(args.input_size),
                    "--head-planes", str(args.head_planes), "--batch-size", str(args.batch_size),
                    "--epochs", str(args.epochs), "--lr", str(args.lr), "--milestones", *map(str, args.milestones),
                    "--eval-interval", str(args.eval_interval), "--workers", str(args.workers),
                    "--seed", str(seed)], check=True)


def plot(runs: dict[str, list[dict[str, float]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, ap_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for label, rows in sorted(runs.items()):
        color = "tab:blue" if label.startswith("ours") else "tab:red"
        style = "-" if label.endswith("0") else "--"
        loss_axis.plot([r["epoch"] for r in rows], [r["heatmap_loss"] for r in rows], style, color=color, label=label)
        validated = [r for r in rows if "AP50" in r]
        ap_axis.plot([r["epoch"] for r in validated], [100 * r["AP50"] for r in validated], style + "o", color=color,
                     label=label)
    loss_axis.set(xlabel="epoch", ylabel="train heatmap loss (epoch mean)", title="training loss")
    ap_axis.set(xlabel="epoch", ylabel="val AP50 (%)", title="validation")
    for axis in (loss_axis, ap_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="centernet_mbv3_small")
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--head-planes", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--milestones", type=int, nargs="+", default=[20, 26])
    parser.add_argument("--eval-interval", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--only", choices=["ours", "paddle"])
    parser.add_argument("--figure", type=Path, help="default: OUT/train_vs_paddle.png")
    args = parser.parse_args(argv)

    runs = {}
    for seed in args.seeds:
        for side, run in (("ours", run_ours), ("paddle", run_paddle)):
            out = args.out / f"{side}_seed{seed}"
            if args.only in (None, side) and not complete(out / "metrics.csv", args.epochs):
                run(args, seed, out)
            if (out / "metrics.csv").exists():
                runs[f"{side} seed {seed}"] = read_metrics(out / "metrics.csv")
    title = (f"{args.model}, {args.input_size}px, batch {args.batch_size}, Adam {args.lr:g}, x0.1 at "
             f"{'/'.join(map(str, args.milestones))} of {args.epochs} epochs, from scratch: {args.data.name}")
    plot(runs, args.figure or args.out / "train_vs_paddle.png", title)
    print(f"| run | " + " | ".join(f"epoch {int(r['epoch'])}" for r in next(iter(runs.values())) if "AP50" in r)
          + " |")
    for label, rows in sorted(runs.items()):
        cells = [f"{100 * r['AP50']:.1f} / {100 * r['AP']:.1f}" for r in rows if "AP50" in r]
        print(f"| {label} (val AP50 / AP, %) | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
