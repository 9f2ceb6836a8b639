"""The learning-rate schedule: a pure function of the run's configuration and its optimizer step.

Two shapes, both with an optional linear warm-up over the first ``warmup_epochs``:

- ``step`` (PaddleDetection's, the zoo configs' default): the base rate, times ``gamma`` after
  each milestone epoch (90 and 120 of 140, scaled to the run's length). No warm-up in Paddle's
  recipe.
- ``cosine`` (the short-run recipe): after the warm-up, half a cosine from the base rate down to
  ``final_lr_ratio`` times it at the last step. A run of a few thousand images from scratch spends
  most of its steps near the peak rate, where it learns fastest, and still ends on small steps
  instead of dropping 10x twice in the last third.

The rate depends only on the step (fractional epochs = step / steps per epoch), so a resumed run
continues on the same curve; :func:`build_scheduler` wraps it for ``torch.optim``, stepped once per
optimizer step.
"""

from __future__ import annotations

import math

import torch

__all__ = ["SCHEDULES", "lr_factor", "build_scheduler"]

SCHEDULES = ("step", "cosine")


def lr_factor(train, epoch: float) -> float:
    """The base rate's multiplier ``epoch`` epochs into the run (a fraction within an epoch).

    ``train``: a ``TrainConfig`` (``schedule``, ``epochs``, ``warmup_epochs``, ``warmup_start``,
    milestones via ``scaled_milestones()``, ``gamma``, ``final_lr_ratio``).
    """
    if train.schedule == "step":
        drops = sum(1 for milestone in train.scaled_milestones() if milestone <= math.floor(epoch + 1e-9))
        factor = train.gamma ** drops
    elif train.schedule == "cosine":
        span = max(train.epochs - train.warmup_epochs, 1e-9)
        progress = min(max((epoch - train.warmup_epochs) / span, 0.0), 1.0)
        factor = train.final_lr_ratio + (1 - train.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"train.schedule must be one of {list(SCHEDULES)}, got {train.schedule!r}")
    if epoch < train.warmup_epochs:  # linear from warmup_start to the schedule's value
        factor *= train.warmup_start + (1 - train.warmup_start) * epoch / train.warmup_epochs
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, train, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler to ``step()`` after every optimizer step: the rate of step ``s`` (0-based) is
    ``lr * lr_factor(train, s / steps_per_epoch)``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(train, step / steps_per_epoch))
