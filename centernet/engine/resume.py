"""Resuming a run: it continues with the configuration stored in its ``last.pt``, not a new one.

``centernet train --run-dir R --resume`` needs no other flag: the model, data, batch size,
learning rate and schedule all come from ``R/last.pt``. A setting given again must equal the
run's, except those in :data:`SAFE_TO_CHANGE`, which change neither the weights a run reaches
nor its data; any other difference is refused with the list of differences, before anything in
``R`` is touched.

``train.epochs`` may change too, with one rule: the learning-rate drops stay at the epochs where
the run's own schedule put them (a 9-epoch run drops after epochs 6 and 8; extended to 20 epochs
it still drops there, and the added epochs continue at the last rate). The new length must
exceed the epochs already completed. A run that has completed all its epochs is not resumed
without a larger ``--epochs``. (With ``train.schedule: cosine`` there are no drops to keep: the
cosine is stretched over the new length, so the rate goes back up at the resume point.)
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

from ..config import Config
from .checkpoint import load_checkpoint, run_config

__all__ = ["SAFE_TO_CHANGE", "flat_settings", "load_resume_point", "resumed_config"]

SAFE_TO_CHANGE = {
    "data.workers": "data loading processes",
    "data.check": "the data check before training",
    "train.device": "where the run computes",
    "train.tensorboard": "logging",
    "train.checkpoint_interval": "how often last.pt is written",
    "train.eval_interval": "how often the run validates",
}
SCHEDULE_KEYS = ("train.milestones", "train.schedule_epochs")  # compared as the lr-drop epochs they give
PATH_KEYS = {"data.train_images", "data.train_ann", "data.val_images", "data.val_ann", "model.pretrained",
             "model.pretrained_backbone"}


def flat_settings(config: Config) -> dict[str, Any]:
    """``{"section.key": value}`` of every setting of ``config``."""
    return {f"{section}.{key}": value for section, values in dataclasses.asdict(config).items()
            for key, value in values.items()}


def load_resume_point(path: str | Path) -> tuple[dict[str, Any], Config, int]:
    """The checkpoint at ``path`` (a run's last.pt), the run's configuration it stores, and the
    number of epochs the run has completed (a mid-epoch checkpoint's epoch is not completed)."""
    path = Path(path)
    if not path.is_file():
        folder = path.parent
        where = f"{folder} holds no last.pt" if folder.is_dir() else f"{folder} does not exist"
        raise FileNotFoundError(f"{path}: nothing to resume ({where}); leave out --resume to start the run")
    state = load_checkpoint(path)
    config = run_config(state, path, f"it cannot be resumed; start a new run with --pretrained {path} "
                                     f"to begin from its weights")
    position = state.get("position")
    done = int(position["epoch"]) if position else int(state.get("epoch", -1)) + 1
    return state, config, done


def _same(key: str, run: Any, given: Any) -> bool:
    if key in PATH_KEYS and isinstance(run, str) and isinstance(given, str):
        return os.path.abspath(run) == os.path.abspath(given)
    if isinstance(run, (list, tuple)) and isinstance(given, (list, tuple)):
        return list(run) == list(given)
    return run == given


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(map(str, value)) if len(value) == 2 and all(isinstance(v, int) for v in value) \
            else "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def resumed_config(path: str | Path, stored: Config, epochs_done: int, given: Config,
                   labels: Mapping[str, str]) -> Config:
    """The configuration a resumed run continues with: ``stored`` (the run's, from last.pt), with
    the settings of ``given`` named in ``labels`` (``{"train.lr": "--lr"}``: what was given, and
    how to name it in a message) that :data:`SAFE_TO_CHANGE` allows, and ``train.epochs`` under
    the module's rule. Any other given setting that differs from the run's raises ``ValueError``
    listing every such difference."""
    config = copy.deepcopy(stored)
    run, wanted = flat_settings(stored), flat_settings(given)
    differences = []
    for key, label in labels.items():
        if key in SCHEDULE_KEYS or (key == "model.num_classes" and wanted[key] is None):
            continue  # the schedule: below; no class count given: the data's, as the run's
        if _same(key, run[key], wanted[key]):
            continue
        if key in SAFE_TO_CHANGE or key == "train.epochs":
            section, name = key.split(".")
            setattr(getattr(config, section), name, wanted[key])
        else:
            differences.append(f"{label} {_show(wanted[key])} (the run: {_show(run[key])})")
    epochs_label = labels.get("train.epochs", "train.epochs")
    extended = config.train.epochs != stored.train.epochs
    if not extended and any(key in labels for key in SCHEDULE_KEYS):
        drops, run_drops = given.train.scaled_milestones(), stored.train.scaled_milestones()
        if drops != run_drops:
            label = next(labels[key] for key in SCHEDULE_KEYS if key in labels)
            differences.append(f"{label}: learning-rate drops after epochs {drops} "
                               f"(the run: after {run_drops})")
    if differences:
        raise ValueError(f"{path}: a resumed run keeps the settings it was started with, and "
                         f"{len(differences)} given setting(s) differ: {'; '.join(differences)}. Leave them "
                         f"out (the run's own are used), or start a new run in another folder")
    if extended:
        if config.train.epochs <= epochs_done:
            raise ValueError(f"{epochs_label} {config.train.epochs}: the run in {Path(path).parent} has already "
                             f"completed {epochs_done} epochs; give more to train it longer")
        # the lr drops stay where the run's schedule put them (see the module docstring)
        config.train.milestones = tuple(stored.train.scaled_milestones())
        config.train.schedule_epochs = config.train.epochs
    elif epochs_done >= config.train.epochs:
        raise ValueError(f"{path}: the run has completed all its {config.train.epochs} epochs; to train it "
                         f"longer, give --epochs N with N > {config.train.epochs}")
    return config
