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
  train MODEL --data DIR --out DIR     PaddleDetection's own Trainer (ppdet.engine.Trainer, its
                                       reader, loss, Adam and PiecewiseDecay, COCO evaluation) on
                                       a COCO folder laid out as `centernet synth` writes it, from
                                       scratch; per-epoch losses and val metrics -> DIR/metrics.csv
"""

import argparse
import csv
import json
import os
import random
import sys
import time

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


def pipeline(listing, out_dir, input_size, draws, seed, draws_only=False):
    """Paddle's train reader on each listed image, ``draws`` times, with its random draws
    (``draws_only``: only the draws are kept, for their statistics over many samples)."""
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
            if not draws_only:
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


# -------------------------------------------------------------------------------- the whole trainer

CONFIG = """\
architecture: CenterNet
use_gpu: false
log_iter: 20
save_dir: {out}/output
output_eval: {out}/output
snapshot_epoch: {eval_interval}
epoch: {epochs}
num_classes: {num_classes}
metric: COCO
worker_num: {workers}
use_ema: false
norm_type: bn
weights: {out}/output/model_final

CenterNet:
  backbone: {backbone}
  neck: CenterNetDLAFPN
  head: CenterNetHead
  post_process: CenterNetPostProcess
{backbone_config}
CenterNetDLAFPN:
{neck_config}
CenterNetHead:
  head_planes: {head_planes}
  regress_ltrb: False
CenterNetPostProcess:
  max_per_img: 100
  regress_ltrb: False

LearningRate:
  base_lr: {lr}
  schedulers:
  - !PiecewiseDecay
    gamma: 0.1
    milestones: {milestones}
    use_warmup: False
OptimizerBuilder:
  optimizer:
    type: Adam
  regularizer: NULL

TrainDataset:
  !COCODataSet
    image_dir: images
    anno_path: annotations.json
    dataset_dir: {data}/train
    data_fields: ['image', 'gt_bbox', 'gt_class', 'is_crowd']
EvalDataset:
  !COCODataSet
    image_dir: images
    anno_path: annotations.json
    dataset_dir: {data}/val
    allow_empty: true

TrainReader:
  inputs_def:
    image_shape: [3, {size}, {size}]
  sample_transforms:
    - Decode: {{}}
    - FlipWarpAffine: {{keep_res: False, input_h: {size}, input_w: {size}, use_random: True}}
    - CenterRandColor: {{}}
    - Lighting: {{eigval: {eigval}, eigvec: {eigvec}}}
    - NormalizeImage: {{mean: {mean}, std: {std}, is_scale: False}}
    - Permute: {{}}
    - Gt2CenterNetTarget: {{num_classes: {num_classes}, down_ratio: 4, max_objs: 128}}
  batch_size: {batch_size}
  shuffle: True
  drop_last: True
  use_shared_memory: False
EvalReader:
  sample_transforms:
    - Decode: {{}}
    - WarpAffine: {{keep_res: True, input_h: {size}, input_w: {size}}}
    - NormalizeImage: {{mean: {mean}, std: {std}}}
    - Permute: {{}}
  batch_size: 1
TestReader:
  sample_transforms:
    - Decode: {{}}
    - WarpAffine: {{keep_res: True, input_h: {size}, input_w: {size}}}
    - NormalizeImage: {{mean: {mean}, std: {std}, is_scale: True}}
    - Permute: {{}}
  batch_size: 1
"""

# The backbone and neck sections of PaddleDetection's configs/centernet/*.yml, by our row name.
ROW_CONFIGS = {
    "centernet_mbv3_small": ("MobileNetV3", "MobileNetV3:\n  model_name: small\n  scale: 1.\n"
                             "  with_extra_blocks: false\n  extra_block_filters: []\n  feature_maps: [4, 9, 12]\n",
                             "  first_level: 0\n  last_level: 3\n  down_ratio: 8\n  dcn_v2: False\n"),
    "centernet_mbv3_large": ("MobileNetV3", "MobileNetV3:\n  model_name: large\n  scale: 1.\n"
                             "  with_extra_blocks: false\n  extra_block_filters: []\n  feature_maps: [4, 7, 13, 16]\n",
                             "  first_level: 0\n  last_level: 4\n  down_ratio: 4\n  dcn_v2: False\n"),
}


class MetricsLog:
    """A ppdet callback: each epoch's mean losses (from the trainer's running sums) and, after each
    evaluation, the 12 COCO numbers, as rows of metrics.csv (the columns of ours)."""

    COCO = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    LOSSES = {"loss": "loss", "heatmap_loss": "heatmap_loss", "wh_loss": "size_loss", "offset_loss": "offset_loss"}

    def __init__(self, trainer, path):
        from ppdet.engine.callbacks import Callback

        class _Callback(Callback):
            def on_epoch_begin(inner, status):
                self.epoch_begin(status)

            def on_epoch_end(inner, status):
                self.epoch_end(status)

        self.callback = _Callback(trainer)
        self.trainer, self.path = trainer, path
        self.row, self.start, self.sums = {}, 0.0, {}
        with open(path, "w", newline="") as handle:
            csv.writer(handle).writerow(["epoch", "lr", *self.LOSSES, "images_per_s", "epoch_s", *self.COCO])

    def _totals(self, status):
        meters = (status["training_staus"].meters if "training_staus" in status else None) or {}
        return {name: (meters[key].total, meters[key].count) for name, key in self.LOSSES.items() if key in meters}

    def epoch_begin(self, status):
        if status["mode"] == "train":
            self.start, self.sums = time.time(), self._totals(status)

    def epoch_end(self, status):
        if status["mode"] == "train":
            seconds = time.time() - self.start
            self.row = {"epoch": status["epoch_id"] + 1, "lr": status.get("learning_rate"),
                        "images_per_s": status["steps_per_epoch"] * self.trainer.cfg.TrainReader["batch_size"] / seconds,
                        "epoch_s": seconds}
            for name, (total, count) in self._totals(status).items():
                before_total, before_count = self.sums.get(name, (0.0, 0))
                self.row[name] = (total - before_total) / max(count - before_count, 1)
            last = status["epoch_id"] + 1 == self.trainer.cfg.epoch
            if (status["epoch_id"] + 1) % self.trainer.cfg.snapshot_epoch and not last:
                self.write()  # no evaluation this epoch
        else:
            stats = self.trainer._metrics[0].get_results()["bbox"]
            self.row.update(zip(self.COCO, (float(v) for v in stats)))
            self.write()

    def write(self):
        with open(self.path, "a", newline="") as handle:
            csv.writer(handle).writerow([self.row.get(k, "") for k in
                                         ["epoch", "lr", *self.LOSSES, "images_per_s", "epoch_s", *self.COCO]])
        self.row = {}


def train(name, data, out, args):
    """PaddleDetection's Trainer on ``data`` (``train/`` and ``val/``, images/ + annotations.json)."""
    from ppdet.core.workspace import load_config
    from ppdet.engine import Trainer

    if name not in ROW_CONFIGS:
        raise SystemExit(f"train: rows with a config here: {', '.join(ROW_CONFIGS)}")
    backbone, backbone_config, neck_config = ROW_CONFIGS[name]
    categories = json.loads(open(os.path.join(data, "train", "annotations.json")).read())["categories"]
    text = CONFIG.format(out=out, eval_interval=args.eval_interval, epochs=args.epochs, num_classes=len(categories),
                         workers=args.workers, backbone=backbone, backbone_config=backbone_config,
                         neck_config=neck_config, head_planes=args.head_planes, lr=args.lr,
                         milestones=list(args.milestones), data=os.path.abspath(data), size=args.input_size,
                         eigval=EIGVAL, eigvec=EIGVEC, mean=MEAN, std=STD, batch_size=args.batch_size)
    path = os.path.join(out, "config.yml")
    with open(path, "w") as handle:
        handle.write(text)
    paddle.seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    cfg = load_config(path)
    trainer = Trainer(cfg, mode="train")
    log = MetricsLog(trainer, os.path.join(out, "metrics.csv"))
    trainer.register_callbacks([log.callback])
    trainer.train(validate=True)
    print(f"PaddleDetection's trainer: {args.epochs} epochs of {name} -> {out}/metrics.csv")


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
    pipe.add_argument("--draws-only", action="store_true", help="keep only the random draws")
    fit = sub.add_parser("train", help="PaddleDetection's own Trainer on a COCO folder")
    fit.add_argument("model", choices=sorted(ROW_CONFIGS))
    fit.add_argument("--data", required=True, help="folder with train/ and val/ (images/ + annotations.json)")
    fit.add_argument("--out", required=True)
    fit.add_argument("--input-size", type=int, default=512)
    fit.add_argument("--head-planes", type=int, default=256)
    fit.add_argument("--batch-size", type=int, default=8)
    fit.add_argument("--epochs", type=int, default=60)
    fit.add_argument("--lr", type=float, default=5e-4)
    fit.add_argument("--milestones", type=int, nargs="+", default=[39, 51])
    fit.add_argument("--eval-interval", type=int, default=5)
    fit.add_argument("--workers", type=int, default=2)
    fit.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    paddle.set_device("cpu")
    os.makedirs(args.out, exist_ok=True)
    if args.command == "init":
        init_stats(args.model, args.out, args.seeds)
    elif args.command == "step":
        adam_steps(args.model, args.out, args.steps, args.classes, args.shape, args.lr, args.seed)
    elif args.command == "train":
        train(args.model, args.data, args.out, args)
    else:
        pipeline(args.listing, args.out, args.input_size, args.draws, args.seed, args.draws_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
