"""INT8 against fp32 on a trained checkpoint: COCO AP and AP50 of each on the same val split with
the same decode, and how many of the float graph's top-100 detections the INT8 graph reproduces.

    .venv/bin/python benchmarks/int8_accuracy.py --weights runs/demo/best.pt --data data/synth \\
        --calibration data/synth/train/images --out runs/int8_demo [--methods entropy percentile minmax]

Everything a user would run, through the CLI: ``centernet export`` (float), ``centernet export
--quantize int8 --calibration ... --calibration-method M`` per method, then ``centernet eval
--backend onnx`` on each file. Agreement: on every val image, each of the float graph's top-100
detections (score above ``--agreement-threshold``, default 0: all 100) counts as reproduced when
an INT8 detection of the same class overlaps it at IoU >= 0.9 (greedy, each INT8 detection used
once, the float detections in score order); a box clipped to zero area by the image border (a
low-score detection in the letterbox padding: IoU is undefined) counts as reproduced by one whose
corners are within 1 pixel of it. Prints a Markdown table and writes ``OUT/int8.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from torchvision.ops import box_iou

CLI = [sys.executable, "-m", "centernet"]


def run(*arguments: str) -> None:
    done = subprocess.run([*CLI, *arguments], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"centernet {' '.join(arguments)} failed:\n{done.stderr[-2000:]}")


def agreement(reference: list[dict], results: list[dict], score_threshold: float = 0.0,
              iou: float = 0.9) -> tuple[int, int]:
    """(reproduced, total): the reference detections above ``score_threshold`` that a detection
    of ``results`` of the same class overlaps at IoU >= ``iou``, each used once."""
    reproduced = total = 0
    for expected, got in zip(reference, results):
        keep = expected["scores"] > score_threshold
        order = expected["scores"][keep].argsort(descending=True)
        boxes, labels = expected["boxes"][keep][order], expected["labels"][keep][order]
        overlaps = box_iou(boxes, got["boxes"]) if len(got["boxes"]) else torch.zeros(len(boxes), 0)
        corners = (boxes[:, None] - got["boxes"][None]).abs().amax(dim=2)  # [N, M]
        overlaps = torch.where(overlaps.isnan(), (corners <= 1.0).float(), overlaps)  # zero-area boxes
        free = torch.ones(len(got["boxes"]), dtype=torch.bool)
        for row, label in zip(overlaps, labels):
            total += 1
            candidates = torch.where(free & (got["labels"] == label), row, torch.tensor(-1.0))
            if len(candidates) and candidates.max() >= iou:
                free[int(candidates.argmax())] = False
                reproduced += 1
    return reproduced, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="a trained checkpoint (best.pt)")
    parser.add_argument("--data", required=True, help="DIR with val/images and val/annotations.json")
    parser.add_argument("--calibration", required=True, help="calibration images (e.g. DIR/train/images)")
    parser.add_argument("--methods", nargs="+", default=["entropy", "percentile", "minmax"])
    parser.add_argument("--calibration-count", type=int, default=100)
    parser.add_argument("--agreement-thresholds", type=float, nargs="+", default=[0.0, 0.3],
                        help="agreement of the float detections above each score (0: all of the top 100)")
    parser.add_argument("--out", required=True, help="folder for the ONNX files, evals and int8.json")
    args = parser.parse_args()

    from centernet.data.images import list_images, load_image
    from centernet.export import OnnxDetector
    from centernet.io import write_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"float": out / "fp32.onnx", **{method: out / f"int8_{method}.onnx" for method in args.methods}}
    if not files["float"].exists():
        run("export", "--weights", args.weights, "--out", str(files["float"]))
    for method in args.methods:
        if not files[method].exists():
            run("export", "--weights", args.weights, "--quantize", "int8", "--calibration", args.calibration,
                "--calibration-count", str(args.calibration_count), "--calibration-method", method,
                "--out", str(files[method]))
    images = [load_image(file) for file in list_images(Path(args.data) / "val" / "images")]
    reference = OnnxDetector(files["float"], threads=2).detect_images(images)
    rows = []
    for label, path in files.items():
        eval_dir = out / f"eval_{label}"
        if not (eval_dir / "eval.json").exists():
            run("eval", "--weights", str(path), "--backend", "onnx", "--data", args.data, "--out", str(eval_dir))
        metrics = json.loads((eval_dir / "eval.json").read_text())
        results = reference if label == "float" else OnnxDetector(path, threads=2).detect_images(images)
        agreements = {threshold: agreement(reference, results, threshold) for threshold in args.agreement_thresholds}
        rows.append({"graph": label, "AP": 100 * metrics["AP"], "AP50": 100 * metrics["AP50"],
                     "agreement": {str(t): {"reproduced": r, "total": n} for t, (r, n) in agreements.items()}})
    ap_float = rows[0]["AP"]
    print(f"| {args.weights} | val AP (%) | AP50 (%) | AP drop | "
          + " | ".join(f"float detections {'in the top 100' if t == 0 else f'above {t:g}'} reproduced"
                       for t in args.agreement_thresholds) + " |")
    print("| --- | ---: | ---: | ---: |" + " ---: |" * len(args.agreement_thresholds))
    for row in rows:
        drop = "" if row["graph"] == "float" else f"{ap_float - row['AP']:.2f}"
        shares = [f"{100 * a['reproduced'] / max(a['total'], 1):.1f} % of {a['total']}"
                  for a in row["agreement"].values()]
        name = "float (ONNX)" if row["graph"] == "float" else f"INT8, {row['graph']}"
        print(f"| {name} | {row['AP']:.2f} | {row['AP50']:.2f} | {drop} | " + " | ".join(shares) + " |")
    write_json(out / "int8.json", rows, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
