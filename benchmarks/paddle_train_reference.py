"""PaddleDetection's training, piece by piece, for the training-equivalence tests (tests/paddle).

Runs only inside the reference venv (``.venv-paddle/bin/python benchmarks/paddle_train_reference.py``;
made by ``scripts/setup_paddle_env.sh``); it imports paddle and ppdet, never torch. Each command
writes what PaddleDetection 2.6.0 itself computes, for our side to reproduce:

  init MODEL --out DIR [--seeds N]     per-tensor mean and std of N fresh inits of the row
                                       (Paddle's own initialisers) -> DIR/<model>_init.npz
  step MODEL --out DIR [--steps N]     a fresh Paddle init saved as DIR/<model>_step.pdparams, one
                                       fixed batch with Gt2CenterNetTarget's targets, and in float64:
                                       the losses of N Adam steps on that batch, the gradients of
                                       the first step and the weights after the first and the last
                                       -> DIR/<model>_step.npz
  pipeline IMAGES_JSON --out DIR       Paddle's train reader (FlipWarpAffine, CenterRandColor,
                                       Lighting, NormalizeImage, Permute, Gt2CenterNetTarget) on
                                       the images and boxes listed in IMAGES_JSON, every random draw
                                       recorded so that our pipeline can replay it -> DIR/pipeline.npz
"""

import argparse
import json
import os
import sys

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")
import cv2  # noqa: E402
import paddle  # noqa: E402
from ppdet.data.transform.batch_operators import Gt2CenterNetTarget  # noqa: E402
from ppdet.data.transform.operators import (CenterRandColor, FlipWarpAffine, Lighting,  # noqa: E402
                                            NormalizeImage, Permute)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from paddle_reference import ZOO, build, fixed_images  # noqa: E402

# The train reader of configs/centernet/_base_/centernet_reader.yml.
EIGVAL = [0.2141788, 0.01817699, 0.00341571]
EIGVEC = [[-0.58752847, -0.69563484, 0.41340352], [-0.5832747, 0.00994535, -0.81221408],
          [-0.56089297, 0.71832671, 0.41158938]]
MEAN = [0.40789655, 0.44719303, 0.47026116]
STD = [0.2886383, 0.27408165, 0.27809834]


def train_reader(input_size, num_classes):
    """PaddleDetection's CenterNet sample transforms, in the config's order."""
    return [FlipWarpAffine(keep_res=False, input_h=input_size, input_w=input_size, use_random=True),
            CenterRandColor(),
            Lighting(eigval=EIGVAL, eigvec=EIGVEC),
            NormalizeImage(mean=MEAN, std=STD, is_scale=False),
            Permute(),
            Gt2CenterNetTarget(num_classes=num_classes, down_ratio=4, max_objs=128)]


# -------------------------------------------------------------------------------- init

def init_stats(name, out_dir, seeds):
    """Mean and std of every state-dict tensor over ``seeds`` fresh inits (80 classes, head 256)."""
    stats = {}
    for seed in range(seeds):
        for key, value in build(name, seed).state_dict().items():
            array = value.numpy().astype(np.float64)
            stats.setdefault(key, []).append((array.mean(), array.std(), array.size))
    arrays = {key: np.array(rows) for key, rows in stats.items()}  # [seeds, (mean, std, size)]
    np.savez(os.path.join(out_dir, f"{name}_init.npz"), **arrays)
    print(f"{name}: init statistics of {len(arrays)} tensors over {seeds} seeds -> {out_dir}")


# -------------------------------------------------------------------------------- one batch, N steps

def fixed_batch(shape, num_classes, seed):
    """Images [B,3,H,W] and Gt2CenterNetTarget's targets for random boxes (input pixels)."""
    batch, height, width = shape
    rng = np.random.default_rng(seed)
    images = fixed_images(shape, seed)
    target_op = Gt2CenterNetTarget(num_classes=num_classes, down_ratio=4, max_objs=128)
    samples = []
    for i in range(batch):
        count = 3 + i
        sizes = rng.uniform(8, min(height, width) / 2, size=(count, 2))
        corners = rng.uniform(0, 1, size=(count, 2)) * (np.array([width, height]) - sizes)
        boxes = np.concatenate([corners, corners + sizes], axis=1).astype(np.float32)
        sample = {"image": images[i], "gt_bbox": boxes.copy(),
                  "gt_class": rng.integers(0, num_classes, size=(count, 1)).astype(np.int32),
                  "center": np.array([width / 2, height / 2], np.float32), "scale": float(max(height, width))}
        samples.append(target_op(sample))
    targets = {key: np.stack([sample[key] for sample in samples])
               for key in ("heatmap", "size", "offset", "index", "index_mask")}
    return images, targets


def adam_steps(name, out_dir, steps, num_classes, shape, lr, seed):
    """Paddle's training step (head loss of ppdet's CenterNetHead, Adam) on one batch, float64."""
    model = build(name, seed, num_classes=num_classes)
    paddle.save(model.state_dict(), os.path.join(out_dir, f"{name}_step.pdparams"))
    images, targets = fixed_batch(shape, num_classes, seed)
    model.to(dtype="float64")
    model.train()
    optimizer = paddle.optimizer.Adam(learning_rate=lr, parameters=model.parameters())
    inputs = {key: paddle.to_tensor(value.astype("int64" if key == "index" else "float64"))
              for key, value in targets.items()}
    image_tensor = paddle.to_tensor(images.astype("float64"))
    arrays = {"images": images, **{f"target_{key}": value for key, value in targets.items()}}
    losses = []
    for step in range(steps):
        feature = model.neck(model.backbone({"image": image_tensor}))
        parts = model.head(feature, inputs)
        parts["det_loss"].backward()
        losses.append([float(parts[key]) for key in ("det_loss", "heatmap_loss", "size_loss", "offset_loss")])
        if step == 0:
            for key, param in model.named_parameters():
                if param.grad is not None:  # not for BN statistics (parameters in Paddle) nor unused ones
                    arrays[f"grad|{key}"] = param.grad.numpy()
        optimizer.step()
        optimizer.clear_grad()
        if step in (0, steps - 1):
            for key, value in model.state_dict().items():
                arrays[f"after{step + 1}|{key}"] = value.numpy()
    arrays["losses"] = np.array(losses)
    np.savez(os.path.join(out_dir, f"{name}_step.npz"), **arrays)
    print(f"{name}: {steps} Adam steps (lr {lr}) on a {list(shape)} batch, float64; losses "
          + " ".join(f"{row[0]:.4f}" for row in losses) + f" -> {out_dir}")


# -------------------------------------------------------------------------------- the data pipeline

class Recorder:
    """Wraps numpy's global random functions that the reader uses, recording every value drawn.

    ``np.random.permutation`` is recorded as the index order it applied (the operator permutes a
    list of its methods; shuffling indices of the same length draws the same numbers)."""

    NAMES = ("choice", "randint", "random", "permutation", "uniform", "normal")

    def __init__(self):
        self.draws = []
        self.originals = {name: getattr(np.random, name) for name in self.NAMES}

    def __enter__(self):
        for name in self.NAMES:
            setattr(np.random, name, self._wrap(name))
        return self

    def __exit__(self, *exc):
        for name, function in self.originals.items():
            setattr(np.random, name, function)

    def _wrap(self, name):
        original = self.originals[name]

        def recorded(*args, **kwargs):
            if name == "permutation" and not np.isscalar(args[0]):
                order = original(len(args[0]))
                self.draws.append((name, [int(i) for i in order]))
                return [args[0][i] for i in order]
            value = original(*args, **kwargs)
            self.draws.append((name, np.asarray(value, dtype=np.float64).tolist()))
            return value
        return recorded


def pipeline(listing, out_dir, input_size, draws, seed):
    """Paddle's train reader on each listed image, ``draws`` times, with its random draws."""
    items = json.loads(open(listing).read())
    np.random.seed(seed)
    arrays, records = {}, []
    n = 0
    for item in items:
        bgr = cv2.imread(item["file"], cv2.IMREAD_COLOR)  # ppdet's Decode: cv2, then RGB
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        for _ in range(draws):
            sample = {"image": rgb.copy(), "gt_bbox": np.array(item["boxes"], np.float32).reshape(-1, 4),
                      "gt_class": np.array(item["labels"], np.int32).reshape(-1, 1),
                      "h": rgb.shape[0], "w": rgb.shape[1]}
            with Recorder() as recorder:
                for op in train_reader(input_size, item["num_classes"]):
                    sample = op(sample)
            arrays[f"image_{n}"] = sample["image"]
            for key in ("heatmap", "size", "offset", "index", "index_mask"):
                arrays[f"{key}_{n}"] = sample[key]
            records.append({"file": item["file"], "boxes": item["boxes"], "labels": item["labels"],
                            "num_classes": item["num_classes"], "draws": recorder.draws})
            n += 1
    np.savez(os.path.join(out_dir, "pipeline.npz"), **arrays)
    with open(os.path.join(out_dir, "pipeline.json"), "w") as handle:
        json.dump(records, handle)
    print(f"pipeline: {n} samples ({len(items)} images x {draws} draws) -> {out_dir}")


def parse_shape(text):
    parts = [int(p) for p in text.lower().split("x")]
    if len(parts) != 3 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"shape must be BxHxW, got {text!r}")
    return tuple(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="init statistics of every tensor")
    init.add_argument("model", choices=list(ZOO))
    init.add_argument("--out", required=True)
    init.add_argument("--seeds", type=int, default=3)
    step = sub.add_parser("step", help="N Adam steps on one batch, float64")
    step.add_argument("model", choices=list(ZOO))
    step.add_argument("--out", required=True)
    step.add_argument("--steps", type=int, default=5)
    step.add_argument("--classes", type=int, default=3)
    step.add_argument("--shape", type=parse_shape, default=(2, 128, 128), help="BxHxW")
    step.add_argument("--lr", type=float, default=5e-4)
    step.add_argument("--seed", type=int, default=0)
    pipe = sub.add_parser("pipeline", help="the train reader with its random draws recorded")
    pipe.add_argument("listing", help="JSON list of {file, boxes [[x1,y1,x2,y2]...], labels, num_classes}")
    pipe.add_argument("--out", required=True)
    pipe.add_argument("--input-size", type=int, default=256)
    pipe.add_argument("--draws", type=int, default=4, help="random draws per image")
    pipe.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    paddle.set_device("cpu")
    os.makedirs(args.out, exist_ok=True)
    if args.command == "init":
        init_stats(args.model, args.out, args.seeds)
    elif args.command == "step":
        adam_steps(args.model, args.out, args.steps, args.classes, args.shape, args.lr, args.seed)
    else:
        pipeline(args.listing, args.out, args.input_size, args.draws, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
