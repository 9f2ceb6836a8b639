"""The training loop: Adam with PaddleDetection's step schedule (or the short-run cosine one), EMA,
AMP, DDP, exact resume.

A run folder holds everything a run makes::

    config.yaml        the full configuration of the run
    last.pt, best.pt   checkpoints (model, EMA, optimizer, scheduler, grad scaler, epoch and step,
                       RNG states, config); written atomically, by rank 0 only
    metrics.csv        one row per epoch: losses, lr, speed, COCO metrics
    losses.png, map.png
    tensorboard/       losses and lr per step, COCO metrics and 4 drawn val images per validation
                       (``train.tensorboard``; on when the tensorboard package is installed)
    per_class_ap.csv, pr_curves.png, confusion_matrix.png, confusion_matrix.csv
                       where best.pt goes wrong on the val split, class by class (``analysis``)

One optimizer step takes ``accumulate`` micro-batches of ``batch_size`` images in each of the
``world_size`` processes. The images of a step and its loss do not depend on how the step is
split: the data order is drawn from ``(seed, epoch)`` (``distributed.EpochBatchSampler``), each
item's augmentation from ``(seed, epoch, index)``, and each micro-batch's loss is rescaled so that
the heatmap loss is normalised by the positives of the whole step and the size/offset losses by
its objects (:func:`step_loss_scales`). So 2 processes x batch 8, batch 8 x accumulate 2 and
batch 16 take the same gradient steps, BatchNorm aside (SyncBN makes the statistics agree across
processes, not across accumulated micro-batches).

Exact resume: everything that decides the rest of a run is in ``last.pt``, and the data order has
no hidden state, so a run resumed from any ``last.pt`` (an epoch end, or every
``checkpoint_interval`` steps, which records the position in the epoch) ends with the same
weights as an uninterrupted run, bitwise on CPU. A run killed between checkpoints replays the
steps since the last one.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import math
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..allocator import keep_freed_memory
from ..builder import load_initial_weights
from ..config import Config, save_config
from ..data.check import checked_annotations
from ..data.coco import CocoDetection, collate
from ..data.errors import DataError
from ..data.transforms import EvalTransform, TrainTransform
from ..io import write_text
from ..losses import CenterNetLoss
from ..models import build_model
from . import distributed
from .checkpoint import rng_state, save_checkpoint, set_rng_state
from .distributed import EpochBatchSampler, Process
from .evaluate import METRIC_NAMES, evaluate, format_metrics
from .predict import Detector, select_device
from .resume import flat_settings, load_resume_point, resumed_config
from .schedule import SCHEDULES, build_scheduler
from .tensorboard_logger import TensorBoardLogger, tensorboard_wanted, validation_pictures

LOSS_NAMES = ["loss", "heatmap_loss", "wh_loss", "offset_loss"]
CSV_FIELDS = ["epoch", "lr", *LOSS_NAMES, "images_per_s", "epoch_s", *METRIC_NAMES]
TARGET_KEYS = ["heatmap", "wh", "offset", "index", "mask"]
AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


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
        self.average = {k: v.clone().to(self.average[k].device) for k, v in state["average"].items()}
        self.step, self.last_decay = state["step"], state["last_decay"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _checked(image_dir: str, ann_file: str, config: Config, process: Process) -> dict | None:
    """The annotations to train or validate on after ``data.check`` (None: read the file).

    Rank 0 checks (decoding every image, in a thread per CPU core) and tells the others the outcome.
    """
    if not config.data.check:
        return None
    outcome: Any = None
    data = None
    if process.is_main:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                data = checked_annotations(image_dir, ann_file, skip_bad=config.data.skip_bad,
                                           workers=os.cpu_count() or 1)
                outcome = ("skipped", data, [str(w.message) for w in caught]) if caught else None
            except DataError as error:
                outcome = ("error", str(error), [])
    outcome = distributed.broadcast_object(outcome)
    if outcome is None:
        return data  # rank 0 keeps the file it parsed; the others read it themselves
    kind, value, messages = outcome
    if kind == "error":
        raise DataError(value)
    for message in messages if process.is_main else []:
        warnings.warn(message, stacklevel=3)
    return value


def build_datasets(config: Config, process: Process = Process()) -> tuple[CocoDetection, CocoDetection | None]:
    """The training set and (when configured) the validation set, after the data checks."""
    data = config.data
    if not data.train_images or not data.train_ann:
        raise ValueError("no training data: set data.train_images and data.train_ann "
                         "(or --data DIR with train/ and val/ inside)")
    train_set = CocoDetection(data.train_images, data.train_ann, TrainTransform(input_size=tuple(data.input_size)),
                              with_targets=True, corrected_radius=data.corrected_radius, seed=config.train.seed,
                              annotations=_checked(data.train_images, data.train_ann, config, process))
    val_set = None
    if data.val_images and data.val_ann:
        val_set = CocoDetection(data.val_images, data.val_ann,
                                EvalTransform(input_size=tuple(data.input_size), keep_res=data.eval_keep_res),
                                annotations=_checked(data.val_images, data.val_ann, config, process))
        if val_set.cat_ids != train_set.cat_ids:
            raise ValueError(f"{data.val_ann}: its categories {val_set.cat_ids} differ from the training "
                             f"set's {train_set.cat_ids} ({data.train_ann})")
    return train_set, val_set


def step_loss_scales(targets: list[dict[str, torch.Tensor]]) -> list[tuple[float, float, float]]:
    """Per micro-batch factors (heatmap, wh, offset) that turn the losses of ``CenterNetLoss``,
    each normalised over its own micro-batch, into parts of the loss normalised over the whole
    step: all micro-batches of this process and of all others.

    ``losses.focal_loss`` divides by max(positives, 1) and ``losses.reg_l1_loss`` by
    ``objects * channels + 1e-4``; the factor is the micro-batch's divisor over the step's. With
    one micro-batch and one process every factor is exactly 1.
    """
    counts = torch.stack([torch.stack([t["heatmap"].eq(1).sum(), t["mask"].sum()]).double()
                          for t in targets])  # [M, 2] positives, objects
    totals = distributed.all_reduce_sum(counts.sum(0))
    counts, (positives, objects) = counts.tolist(), totals.tolist()
    wh_channels = targets[0]["wh"].shape[-1]
    offset_channels = targets[0]["offset"].shape[-1]
    return [(max(count, 1) / max(positives, 1),
             (mask * wh_channels + 1e-4) / (objects * wh_channels + 1e-4),
             (mask * offset_channels + 1e-4) / (objects * offset_channels + 1e-4)) for count, mask in counts]


class Trainer:
    """Trains ``config`` into ``run_dir``; ``resume=True`` continues from ``run_dir/last.pt``.

    Under ``torchrun`` it joins the process group and trains with DistributedDataParallel.
    """

    def __init__(self, config: Config, run_dir: str | Path, resume: bool = False, progress: bool = True):
        self.run_dir = Path(run_dir)
        resume_state = None
        if resume:  # the run's own configuration, with the changes engine/resume.py allows
            resume_state, config = resume_point(self.run_dir / "last.pt", config)
        self.config = config
        train = config.train
        _check_train_config(train)
        _check_model_and_data_config(config)
        if config.model.pretrained and config.model.pretrained_backbone:
            raise ValueError("model.pretrained sets the whole model and model.pretrained_backbone only its "
                             "backbone: give one of them")
        self.tensorboard = tensorboard_wanted(train.tensorboard)
        self.board: TensorBoardLogger | None = None  # open during fit, in the main process
        self.process, self.device = distributed.init_distributed(_train_device(train))
        if self.device.type == "cpu":
            keep_freed_memory()  # no page-fault churn from the steps' large activations (allocator.py)
        self.progress = progress and self.process.is_main
        if not self.process.is_main:
            warnings.filterwarnings("ignore", category=UserWarning)  # rank 0 tells the user once
        seed_everything(train.seed)
        if not resume and (self.run_dir / "last.pt").exists():
            raise FileExistsError(f"{self.run_dir} already holds a run (last.pt): pass resume=True "
                                  "(--resume) to continue it, or choose another run folder")
        self.train_set, self.val_set = build_datasets(config, self.process)
        if config.model.num_classes is None:
            config.model.num_classes = len(self.train_set.class_names)
        elif config.model.num_classes != len(self.train_set.class_names):
            raise ValueError(f"model.num_classes is {config.model.num_classes} but {config.data.train_ann} "
                             f"has {len(self.train_set.class_names)} categories")
        self.model = build_model(config.model.name, **config.model_kwargs())
        if resume_state is None:  # resuming: the weights come from last.pt
            for report in load_initial_weights(self.model, config.model.name, config.model.pretrained,
                                               config.model.pretrained_backbone, num_classes_mismatch="reinit",
                                               progress=self.progress):
                if self.process.is_main:
                    print(report)  # what loaded (and re-initialised, fine-tuning to another class count)
        if train.sync_bn and self.process.distributed:
            self.model = distributed.convert_sync_batchnorm(self.model, self.device)
        self.model.to(self.device)
        self.criterion = CenterNetLoss()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, train, len(self._sampler(0).plan))
        self.amp_dtype = AMP_DTYPES[train.amp_dtype]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=train.amp and self.amp_dtype == torch.float16)
        self.ema = ModelEMA(self.model, train.ema_decay) if train.ema else None
        self.start_epoch, self.start_step, self.start_totals = 0, 0, None
        self.best_ap = -1.0
        if resume_state is not None:
            self._resume(resume_state)
        self.network = self.model  # what the training step calls: the model, or DDP around it
        if self.process.distributed:
            self.network = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.process.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.run_dir.glob(".*.tmp"):  # left by a run killed while saving
                stale.unlink(missing_ok=True)
            save_config(config, self.run_dir / "config.yaml")

    # -- checkpoints ------------------------------------------------------------------------
    def _state(self, epoch: int, position: dict[str, Any] | None = None) -> dict[str, Any]:
        """Checkpoint contents. ``epoch`` is the last completed epoch; ``position`` marks a save in
        the middle of epoch ``position["epoch"]`` after ``position["step"]`` optimizer steps."""
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                "ema_state": self.ema.checkpoint() if self.ema else None,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "epoch": epoch, "position": position,
                "best_ap": self.best_ap, "rng": rng_state(), "config": self.config.to_dict(),
                "class_names": self.train_set.class_names, "cat_ids": self.train_set.cat_ids}

    def _resume(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema and state.get("ema_state"):
            self.ema.restore(state["ema_state"])
        self.start_epoch = state["epoch"] + 1
        position = state.get("position")
        if position:
            self.start_epoch, self.start_step = position["epoch"], position["step"]
            self.start_totals = position["totals"]
        self.best_ap = state["best_ap"]
        set_rng_state(state["rng"])

    # -- one step, one epoch ----------------------------------------------------------------
    def train_step(self, batches: list[dict[str, Any]]) -> dict[str, float]:
        """One optimizer step over this process's micro-batches; returns the step's losses summed
        over all processes (``loss``, its parts, and ``images``)."""
        train = self.config.train
        world = self.process.world_size
        targets = [{key: batch[key].to(self.device, non_blocking=True) for key in TARGET_KEYS} for batch in batches]
        scales = step_loss_scales(targets)
        totals = torch.zeros(5, dtype=torch.float64, device=self.device)  # loss, 3 parts, images
        weights = (self.criterion.heatmap_weight, self.criterion.wh_weight, self.criterion.offset_weight)
        for i, (batch, target, scale) in enumerate(zip(batches, targets, scales)):
            last = i == len(batches) - 1
            syncing = contextlib.nullcontext() if last or world == 1 else self.network.no_sync()
            with syncing:
                images = batch["image"].to(self.device, non_blocking=True)
                with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=train.amp):
                    outputs = self.network(images)
                losses = self.criterion({k: v.float() for k, v in outputs.items()}, target)
                parts = [losses[name] * factor for name, factor in zip(LOSS_NAMES[1:], scale)]
                loss = weights[0] * parts[0] + weights[1] * parts[1] + weights[2] * parts[2]
                self.scaler.scale(loss * world if world > 1 else loss).backward()
            totals += torch.stack([loss.detach(), *(part.detach() for part in parts),
                                   loss.new_tensor(images.shape[0])]).double()
        totals = distributed.all_reduce_sum(totals).tolist()
        if not math.isfinite(totals[0]):
            files = [file for batch in batches for file in batch["file"]]
            raise FloatingPointError(f"the loss became {totals[0]} (images {files} and those of the other "
                                     "processes); lower the learning rate, or use amp_dtype bfloat16")
        if train.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema:
            self.ema.update(self.model)
        return dict(zip([*LOSS_NAMES, "images"], totals))

    def train_one_epoch(self, epoch: int, start_step: int = 0,
                        totals: dict[str, float] | None = None) -> dict[str, float]:
        """Train epoch ``epoch`` from optimizer step ``start_step`` on (``totals``: the sums of the
        steps before it, from a mid-epoch checkpoint). Returns the epoch's mean losses and speed."""
        train = self.config.train
        self.model.train()
        self.train_set.set_epoch(epoch)
        sampler = self._sampler(epoch, start_step)
        loader = DataLoader(self.train_set, batch_sampler=sampler, num_workers=self.config.data.workers,
                            collate_fn=collate, generator=torch.Generator().manual_seed(train.seed * 100_003 + epoch))
        totals = dict(totals or {name: 0.0 for name in [*LOSS_NAMES, "images", "steps", "seconds"]})
        steps = start_step + len(sampler.plan)
        bar = tqdm(total=steps, initial=start_step, desc=f"epoch {epoch + 1}/{train.epochs}",
                   disable=not self.progress, dynamic_ncols=True, leave=True)
        batches = iter(loader)
        seconds, start = totals["seconds"], time.perf_counter()
        for step, micro_batches in enumerate(sampler.plan, start=start_step + 1):
            lr = self.optimizer.param_groups[0]["lr"]  # this step's (the scheduler moves it after the step)
            losses = self.train_step([next(batches) for _ in micro_batches])
            for name, value in losses.items():
                totals[name] += value
            totals["steps"] += 1
            totals["seconds"] = seconds + time.perf_counter() - start
            bar.update(1)
            if self.board:
                self.board.log_step(epoch * steps + step, {name: losses[name] for name in LOSS_NAMES}, lr)
            bar.set_postfix(loss=f"{losses['loss']:.3f}", hm=f"{losses['heatmap_loss']:.3f}",
                            wh=f"{losses['wh_loss']:.2f}", off=f"{losses['offset_loss']:.3f}",
                            img_s=f"{totals['images'] / totals['seconds']:.1f}")
            interval = train.checkpoint_interval
            if interval and step % interval == 0 and step < steps and self.process.is_main:
                save_checkpoint(self._state(epoch - 1, {"epoch": epoch, "step": step, "totals": totals}),
                                self.run_dir / "last.pt")
        bar.close()
        row = {name: totals[name] / max(totals["steps"], 1) for name in LOSS_NAMES}
        row.update(images_per_s=totals["images"] / max(totals["seconds"], 1e-9), epoch_s=totals["seconds"])
        return row

    def _sampler(self, epoch: int, start_step: int = 0) -> EpochBatchSampler:
        train = self.config.train
        return EpochBatchSampler(len(self.train_set), train.batch_size, train.seed, epoch, self.process.rank,
                                 self.process.world_size, train.accumulate, start_step)

    def eval_model(self) -> torch.nn.Module:
        """The weights validation and ``best.pt`` use: the EMA when it is on."""
        if not self.ema:
            return self.model
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.ema.state_dict())
        return model

    def validate(self) -> tuple[dict[str, float], list[dict]]:
        """COCO metrics on the val split and the detections (COCO result dicts) they score."""
        detector = Detector(self.eval_model(), class_names=self.train_set.class_names,
                            input_size=self.config.data.input_size, keep_res=self.config.data.eval_keep_res,
                            flip=self.config.train.flip_test, device=self.device)
        metrics, detections = evaluate(detector, self.val_set, workers=0, progress=self.progress)
        self.model.train()
        return metrics, detections

    def analyze(self, detections: list[dict] | None = None) -> None:
        """Write ``analysis.ANALYSIS_FILES`` of best.pt on the val split into the run folder, from
        its ``detections`` when at hand (the last validation's, when it made best.pt), else from a
        validation of best.pt (a run does not hold on to them: on COCO val, half a million dicts)."""
        from .analysis import analyze

        if detections is None:
            detector = Detector.from_checkpoint(self.run_dir / "best.pt", device=self.device,
                                                flip=self.config.train.flip_test)
            _, detections = evaluate(detector, self.val_set, workers=0, progress=self.progress)
        table = analyze(self.val_set.coco, detections, self.run_dir)
        if self.progress:
            print(f"best.pt on the val split, per class:\n{table}")

    # -- the run ----------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        steps = len(self._sampler(0).plan)  # optimizer steps per epoch
        if self.process.is_main and self.tensorboard:
            self.board = TensorBoardLogger(self.run_dir / "tensorboard", self.start_epoch * steps + self.start_step)
        try:
            return self._fit(steps)
        finally:
            if self.board:
                self.board.close()
                self.board = None

    def _fit(self, steps: int) -> dict[str, Any]:
        train = self.config.train
        main = self.process.is_main
        csv_path = self.run_dir / "metrics.csv"
        if main:
            _keep_csv_rows(csv_path, self.start_epoch)
        metrics: dict[str, float] = {}
        improved = False
        for epoch in range(self.start_epoch, train.epochs):
            detections = None  # the val detections of this epoch, when it validates
            lr = self.optimizer.param_groups[0]["lr"]
            resuming = epoch == self.start_epoch
            row = self.train_one_epoch(epoch, self.start_step if resuming else 0,
                                       self.start_totals if resuming else None)
            last = epoch == train.epochs - 1
            due = train.eval_interval and (epoch + 1) % train.eval_interval == 0
            metrics = {}
            if self.val_set is not None and (due or last):
                if main:
                    metrics, detections = self.validate()
                    if self.progress:
                        print(format_metrics(metrics))
                    if self.board:
                        self.board.log_validation((epoch + 1) * steps, metrics,
                                                  validation_pictures(self.val_set, detections))
                distributed.barrier()
            if not main:
                continue
            row.update(epoch=epoch + 1, lr=lr, **metrics)
            _append_csv_row(csv_path, row)
            improved = bool(metrics) and metrics["AP"] > self.best_ap
            if improved:
                self.best_ap = metrics["AP"]
            state = self._state(epoch)
            # best.pt before last.pt: a run killed in between replays this epoch and writes both
            if improved or (last and not (self.run_dir / "best.pt").exists()):
                save_checkpoint(state, self.run_dir / "best.pt")
            save_checkpoint(state, self.run_dir / "last.pt")
            from ..viz import plot_metrics
            plot_metrics(csv_path, self.run_dir)
        if main and self.val_set is not None and (self.run_dir / "best.pt").exists():
            self.analyze(detections if improved else None)
        distributed.barrier()
        return {"run_dir": str(self.run_dir), "best_ap": self.best_ap, "last_metrics": metrics, "is_main": main}


def resume_point(path: Path, config: Config) -> tuple[dict[str, Any], Config]:
    """The checkpoint ``path`` and the configuration a run resumed from it continues with:
    its own, where ``config`` agrees with it or changes only what ``engine.resume`` allows."""
    state, stored, epochs_done = load_resume_point(path)
    labels = {key: key for key in flat_settings(config)}
    return state, resumed_config(path, stored, epochs_done, config, labels)


def _train_device(train) -> torch.device:
    try:
        return select_device(train.device)
    except ValueError as error:
        raise ValueError(f"train.device: {error}") from None


def _check_train_config(train) -> None:
    if train.amp_dtype not in AMP_DTYPES:
        raise ValueError(f"train.amp_dtype must be one of {sorted(AMP_DTYPES)}, got {train.amp_dtype!r}")
    for name in ("batch_size", "accumulate"):
        if int(getattr(train, name)) < 1:
            raise ValueError(f"train.{name} must be at least 1, got {getattr(train, name)}")
    if train.checkpoint_interval < 0:
        raise ValueError(f"train.checkpoint_interval must be >= 0, got {train.checkpoint_interval}")
    if train.schedule not in SCHEDULES:
        raise ValueError(f"train.schedule must be one of {list(SCHEDULES)}, got {train.schedule!r}")
    if not 0 <= train.warmup_epochs <= train.epochs:
        raise ValueError(f"train.warmup_epochs must be in [0, epochs={train.epochs}], got {train.warmup_epochs}")
    for name, low in (("epochs", 1), ("eval_interval", 0), ("seed", 0)):
        if int(getattr(train, name)) < low:
            raise ValueError(f"train.{name} must be at least {low}, got {getattr(train, name)}")
    for name in ("lr", "grad_clip"):
        value = getattr(train, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"train.{name} must be a positive number, got {value}")


def _check_model_and_data_config(config: Config) -> None:
    for name, value in (("model.head_planes", config.model.head_planes), ("model.num_classes", config.model.num_classes)):
        if value is not None and int(value) < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if int(config.data.workers) < 0:
        raise ValueError(f"data.workers must be >= 0, got {config.data.workers}")
    size = tuple(config.data.input_size)
    if len(size) != 2 or any(int(side) <= 0 or int(side) % 32 for side in size):
        raise ValueError(f"data.input_size must be (height, width), multiples of 32, got {list(size)}")


def _keep_csv_rows(path: Path, epochs_done: int) -> None:
    """Start ``metrics.csv``, or keep the rows of the epochs a resumed run has completed (a run
    killed after writing an epoch's row but before its checkpoint replays that epoch)."""
    rows = []
    if epochs_done and path.exists():
        rows = [row for row in _csv_rows(path)
                if (row.get("epoch") or "").isdigit() and int(row["epoch"]) <= epochs_done]
    _write_csv(path, rows)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """``metrics.csv`` with ``rows``, replaced whole (a full disk leaves the previous file)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())


def _append_csv_row(path: Path, row: dict[str, Any]) -> None:
    """Add an epoch's row to ``metrics.csv`` by rewriting it atomically."""
    _write_csv(path, [*_csv_rows(path), {k: _fmt(row.get(k)) for k in CSV_FIELDS}])


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return "" if value is None else value


def train(config: Config, run_dir: str | Path, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Python twin of ``centernet train`` (also under ``torchrun``)."""
    summary = Trainer(config, run_dir, resume=resume, progress=progress).fit()
    distributed.shutdown()
    return summary
