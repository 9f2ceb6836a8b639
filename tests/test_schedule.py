"""The learning-rate schedule: PaddleDetection's steps exactly as before, cosine and warm-up as
documented, and the rate a pure function of the optimizer step."""

import math

import pytest
import torch

from centernet.config import TrainConfig
from centernet.engine.schedule import build_scheduler, lr_factor


def rates(train, steps_per_epoch):
    """The lr of every optimizer step of a run, read from a scheduler stepped once per step."""
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=train.lr)
    scheduler = build_scheduler(optimizer, train, steps_per_epoch)
    out = []
    for _ in range(train.epochs * steps_per_epoch):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_step_schedule_equals_paddles_per_epoch_drops():
    """Paddle's PiecewiseDecay (x0.1 at epochs 90 and 120 of 140, scaled to 14 epochs: after 9
    and 12) as torch's MultiStepLR stepped per epoch gives it: constant within each epoch."""
    train = TrainConfig(epochs=14, lr=5e-4)
    steps = 3
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=train.lr)
    reference = torch.optim.lr_scheduler.MultiStepLR(optimizer, [9, 12], 0.1)
    expected = []
    for _ in range(train.epochs):
        expected += [optimizer.param_groups[0]["lr"]] * steps
        optimizer.step()
        reference.step()
    assert rates(train, steps) == pytest.approx(expected, rel=1e-12)


def test_cosine_from_peak_to_final_ratio_after_linear_warmup():
    train = TrainConfig(epochs=10, lr=1e-3, schedule="cosine", warmup_epochs=2, warmup_start=0.01, final_lr_ratio=0.01)
    steps = 4
    lrs = rates(train, steps)
    assert lrs[0] == pytest.approx(1e-5)  # warmup_start x lr
    warmup = lrs[:2 * steps]
    assert all(b > a for a, b in zip(warmup, warmup[1:]))  # rising linearly
    assert warmup[4] - warmup[3] == pytest.approx(warmup[1] - warmup[0])
    assert lrs[steps] == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))  # half-way through the warm-up
    assert lrs[2 * steps] == pytest.approx(1e-3)  # the peak right after the warm-up
    cosine = lrs[2 * steps:]
    assert all(b < a for a, b in zip(cosine, cosine[1:]))  # then only down
    last_epoch = (len(lrs) - 1) / steps
    assert lrs[-1] == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (last_epoch - 2) / 8))))
    assert lr_factor(train, 10.0) == pytest.approx(0.01)  # the end of the run


def test_rate_depends_only_on_the_step():
    """A scheduler rebuilt and restored mid-run (resume) continues on the same curve."""
    train = TrainConfig(epochs=6, lr=1e-3, schedule="cosine", warmup_epochs=1)
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=train.lr)
    scheduler = build_scheduler(optimizer, train, 5)
    for _ in range(13):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    again = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=train.lr)
    resumed = build_scheduler(again, train, 5)
    resumed.load_state_dict(state)
    again.param_groups[0]["lr"] = resumed.get_last_lr()[0]
    assert again.param_groups[0]["lr"] == pytest.approx(train.lr * lr_factor(train, 13 / 5))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(again.param_groups[0]["lr"])


def test_unknown_schedule_is_named():
    with pytest.raises(ValueError, match="train.schedule"):
        lr_factor(TrainConfig(schedule="linear"), 0.0)
