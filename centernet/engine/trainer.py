"""The training loop: Adam with PaddleDetection's step schedule, EMA, validation, checkpoints.

A run folder holds everything a run makes::

    config.yaml        the full configuration of the run
    last.pt, best.pt   checkpoints (model, EMA, optimizer, scheduler, epoch, RNG states, config)
    metrics.csv        one row per epoch: losses, lr, speed, COCO metrics
    losses.png, map.png
"""

from __future__ import annotations

import csv
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler
from tqdm import tqdm

from ..config import Config, save_config
from ..data.coco import CocoDetection, collate
from ..data.transforms import EvalTransform, TrainTransform
from ..losses import CenterNetLoss
from ..models import create_model
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .evaluate import METRIC_NAMES, evaluate, format_metrics
from .predict import Detector, select_device

LOSS_NAMES = ["loss", "heatmap_loss", "wh_loss", "offset_loss"]
CSV_FIELDS = ["epoch", "lr", *LOSS_NAMES, "images_per_s", "epoch_s", *METRIC_NAMES]
TARGET_KEYS = ["heatmap", "wh", "offset", "index", "mask"]


class ModelEMA:
    """Exponential moving average of the weights, PaddleDetection's 'threshold' variant.

    decay_t = min(decay, (1 + t) / (10 + t)); the average starts at zero and is bias-corrected by
    1 - decay_t ** t when read, so early steps are not pulled towards zero.
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.9998):
        self.decay = decay
        self.step = 0
        self.last_decay = 0.0
        self.average = {k: torch.zeros_like(v, dtype=torch.float32) if v.is_floating_point() else v.clone()
                        for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        decay = min(self.decay, (1 + self.step) / (10 + self.step))
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                self.average[key].mul_(decay).add_(value.float(), alpha=1 - decay)
            else:
                self.average[key].copy_(value)
        self.last_decay = decay
        self.step += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights, ready for ``model.load_state_dict``."""
        correction = 1 - self.last_decay ** self.step if self.step else 1.0
        return {k: (v / correction if v.is_floating_point() else v.clone()) for k, v in self.average.items()}

    def checkpoint(self) -> dict[str, Any]:
        return {"average": self.average, "step": self.step, "last_decay": self.last_decay}

    def restore(self, state: dict[str, Any]) -> None:
        self.average = {k: v.clone() for k, v in state["average"].items()}
        self.step, self.last_decay = state["step"], state["last_decay"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_datasets(config: Config) -> tuple[CocoDetection, CocoDetection | None]:
    data = config.data
    if not data.train_images or not data.train_ann:
        raise ValueError("no training data: set data.train_images and data.train_ann "
                         "(or --data DIR with train/ and val/ inside)")
    train_set = CocoDetection(data.train_images, data.train_ann, TrainTransform(input_size=tuple(data.input_size)),
                              with_targets=True, corrected_radius=data.corrected_radius, seed=config.train.seed)
    val_set = None
    if data.val_images and data.val_ann:
        val_set = CocoDetection(data.val_images, data.val_ann,
                                EvalTransform(input_size=tuple(data.input_size), keep_res=data.eval_keep_res))
        if val_set.cat_ids != train_set.cat_ids:
            raise ValueError(f"{data.val_ann}: its categories {val_set.cat_ids} differ from the training "
                             f"set's {train_set.cat_ids} ({data.train_ann})")
    return train_set, val_set


class Trainer:
    """Trains ``config`` into ``run_dir``; ``resume=True`` continues from ``run_dir/last.pt``."""

    def __init__(self, config: Config, run_dir: str | Path, resume: bool = False, progress: bool = True):
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        train = config.train
        seed_everything(train.seed)
        self.device = select_device(train.device)
        self.train_set, self.val_set = build_datasets(config)
        if config.model.num_classes is None:
            config.model.num_classes = len(self.train_set.class_names)
        elif config.model.num_classes != len(self.train_set.class_names):
            raise ValueError(f"model.num_classes is {config.model.num_classes} but {config.data.train_ann} "
                             f"has {len(self.train_set.class_names)} categories")
        self.model = create_model(config.model.name, **config.model_kwargs())
        if config.model.pretrained:
            from ..weights import load_weights
            load_weights(self.model, config.model.pretrained)
        self.model.to(self.device)
        self.criterion = CenterNetLoss()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, train.scaled_milestones(), train.gamma)
        self.ema = ModelEMA(self.model, train.ema_decay) if train.ema else None
        self.start_epoch = 0
        self.best_ap = -1.0
        if resume:
            self._resume(self.run_dir / "last.pt")
        elif (self.run_dir / "last.pt").exists():
            raise FileExistsError(f"{self.run_dir} already holds a run (last.pt): pass resume=True "
                                  "(--resume) to continue it, or choose another run folder")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, self.run_dir / "config.yaml")

    # -- checkpoints ------------------------------------------------------------------------
    def _state(self, epoch: int) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                "ema_state": self.ema.checkpoint() if self.ema else None,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "epoch": epoch, "best_ap": self.best_ap, "rng": rng_state(),
                "config": self.config.to_dict(), "class_names": self.train_set.class_names,
                "cat_ids": self.train_set.cat_ids}

    def _resume(self, path: Path) -> None:
        state = load_checkpoint(path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema and state.get("ema_state"):
            self.ema.restore(state["ema_state"])
        self.start_epoch = state["epoch"] + 1
        self.best_ap = state["best_ap"]
        set_rng_state(state["rng"])

    # -- one epoch --------------------------------------------------------------------------
    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        train = self.config.train
        self.model.train()
        self.train_set.set_epoch(epoch)
        generator = torch.Generator().manual_seed(train.seed * 100_003 + epoch)
        loader = DataLoader(self.train_set, batch_size=train.batch_size,
                            sampler=RandomSampler(self.train_set, generator=generator),
                            num_workers=self.config.data.workers, collate_fn=collate,
                            drop_last=len(self.train_set) >= train.batch_size,
                            persistent_workers=False)
        totals = {name: 0.0 for name in LOSS_NAMES}
        seen, steps, start = 0, 0, time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{train.epochs}", disable=not self.progress,
                   dynamic_ncols=True, leave=True)
        for batch in bar:
            images = batch["image"].to(self.device, non_blocking=True)
            targets = {key: batch[key].to(self.device, non_blocking=True) for key in TARGET_KEYS}
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=train.amp):
                outputs = self.model(images)
            losses = self.criterion({k: v.float() for k, v in outputs.items()}, targets)
            if not torch.isfinite(losses["loss"]):
                raise FloatingPointError(f"epoch {epoch + 1}: the loss became {losses['loss'].item()} "
                                         f"(images {batch['file']}); lower the learning rate")
            self.optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if train.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), train.grad_clip)
            self.optimizer.step()
            if self.ema:
                self.ema.update(self.model)
            steps += 1
            seen += images.shape[0]
            for name in LOSS_NAMES:
                totals[name] += losses[name].item()
            speed = seen / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{losses['loss'].item():.3f}", hm=f"{losses['heatmap_loss'].item():.3f}",
                            wh=f"{losses['wh_loss'].item():.2f}", off=f"{losses['offset_loss'].item():.3f}",
                            img_s=f"{speed:.1f}")
        elapsed = time.perf_counter() - start
        row = {name: totals[name] / max(steps, 1) for name in LOSS_NAMES}
        row.update(images_per_s=seen / elapsed, epoch_s=elapsed)
        return row

    def eval_model(self) -> torch.nn.Module:
        """The weights validation and ``best.pt`` use: the EMA when it is on."""
        if not self.ema:
            return self.model
        import copy
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.ema.state_dict())
        return model

    def validate(self) -> dict[str, float]:
        detector = Detector(self.eval_model(), class_names=self.train_set.class_names,
                            input_size=self.config.data.input_size, keep_res=self.config.data.eval_keep_res,
                            flip=self.config.train.flip_test, device=self.device)
        metrics, _ = evaluate(detector, self.val_set, workers=0, progress=self.progress)
        self.model.train()
        return metrics

    # -- the run ----------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        train = self.config.train
        csv_path = self.run_dir / "metrics.csv"
        if self.start_epoch == 0 or not csv_path.exists():
            with open(csv_path, "w", newline="") as handle:
                csv.DictWriter(handle, CSV_FIELDS).writeheader()
        metrics: dict[str, float] = {}
        for epoch in range(self.start_epoch, train.epochs):
            lr = self.optimizer.param_groups[0]["lr"]
            row = self.train_one_epoch(epoch)
            self.scheduler.step()
            last = epoch == train.epochs - 1
            due = train.eval_interval and (epoch + 1) % train.eval_interval == 0
            metrics = {}
            if self.val_set is not None and (due or last):
                metrics = self.validate()
                if self.progress:
                    print(format_metrics(metrics))
            row.update(epoch=epoch + 1, lr=lr, **metrics)
            with open(csv_path, "a", newline="") as handle:
                csv.DictWriter(handle, CSV_FIELDS).writerow({k: _fmt(row.get(k)) for k in CSV_FIELDS})
            improved = bool(metrics) and metrics["AP"] > self.best_ap
            if improved:
                self.best_ap = metrics["AP"]
            state = self._state(epoch)
            save_checkpoint(state, self.run_dir / "last.pt")
            if improved or (last and not (self.run_dir / "best.pt").exists()):
                save_checkpoint(state, self.run_dir / "best.pt")
            from ..viz import plot_metrics
            plot_metrics(csv_path, self.run_dir)
        return {"run_dir": str(self.run_dir), "best_ap": self.best_ap, "last_metrics": metrics}


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return "" if value is None else value


def train(config: Config, run_dir: str | Path, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Python twin of ``centernet train``."""
    return Trainer(config, run_dir, resume=resume, progress=progress).fit()
