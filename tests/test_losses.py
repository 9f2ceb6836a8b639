"""Losses against the formulas written out element by element."""

import math

import numpy as np
import pytest
import torch

from centernet.losses import CenterNetLoss, focal_loss, reg_l1_loss


def focal_loss_by_loops(logits: np.ndarray, target: np.ndarray) -> float:
    positives, total = 0, 0.0
    for logit, gt in zip(logits.ravel().tolist(), target.ravel().tolist()):
        p = min(max(0.5 * (1 + math.tanh(logit / 2)), 1e-4), 1 - 1e-4)  # sigmoid, clamped
        if gt == 1:
            positives += 1
            total -= (1 - p) ** 2 * math.log(p)
        else:
            total -= (1 - gt) ** 4 * p**2 * math.log(1 - p)
    return total / positives if positives else total


def l1_by_loops(pred: np.ndarray, index: np.ndarray, mask: np.ndarray, target: np.ndarray) -> float:
    width = pred.shape[3]
    total, count = 0.0, 0
    for b in range(index.shape[0]):
        for m in range(index.shape[1]):
            if mask[b, m]:
                y, x = divmod(int(index[b, m]), width)
                for d in range(pred.shape[1]):
                    total += abs(pred[b, d, y, x] - target[b, m, d])
                    count += 1
    return total / (count + 1e-4)


def random_heatmap_case(seed, with_positives=True):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(2, 3, 5, 6)).astype(np.float32)
    target = rng.uniform(0, 0.99, size=logits.shape).astype(np.float32)
    target[rng.uniform(size=logits.shape) < 0.5] = 0
    if with_positives:
        target[0, 1, 2, 3] = target[1, 0, 4, 5] = target[1, 2, 0, 0] = 1
    return logits, target


@pytest.mark.parametrize("seed", [0, 1])
def test_focal_loss_matches_the_formula(seed):
    logits, target = random_heatmap_case(seed)
    expected = focal_loss_by_loops(logits, target)
    loss = focal_loss(torch.from_numpy(logits), torch.from_numpy(target))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_focal_loss_without_positives_is_the_negative_term_alone():
    logits, target = random_heatmap_case(2, with_positives=False)
    assert (target < 1).all()
    expected = focal_loss_by_loops(logits, target)
    assert expected > 0
    assert focal_loss(torch.from_numpy(logits), torch.from_numpy(target)).item() == pytest.approx(expected, rel=1e-5)


def test_focal_loss_clamps_extreme_logits_and_keeps_finite_gradients():
    logits = torch.tensor([[[[1e4, -1e4, 50.0, -50.0, 0.0]]]], requires_grad=True)
    target = torch.tensor([[[[1.0, 1.0, 0.0, 0.5, 0.9]]]])
    loss = focal_loss(logits, target)
    loss.backward()
    # a positive at logit -1e4 is clamped to p = 1e-4: loss (1 - 1e-4)^2 * -log(1e-4), over 2 positives
    assert loss.item() == pytest.approx(focal_loss_by_loops(logits.detach().numpy(), target.numpy()), rel=1e-5)
    assert loss.item() > (1 - 1e-4) ** 2 * -math.log(1e-4) / 2
    assert torch.isfinite(logits.grad).all()


def test_focal_loss_of_half_precision_logits_is_float32():
    logits, target = random_heatmap_case(3)
    full = focal_loss(torch.from_numpy(logits), torch.from_numpy(target))
    half = focal_loss(torch.from_numpy(logits).bfloat16(), torch.from_numpy(target))
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=0.02)


def random_regression_case(seed, channels=2):
    rng = np.random.default_rng(seed)
    pred = rng.normal(size=(2, channels, 3, 4)).astype(np.float32)
    index = rng.integers(0, 12, size=(2, 5))
    mask = (rng.uniform(size=(2, 5)) < 0.6).astype(np.float32)
    mask[0, 0] = 1
    target = rng.normal(size=(2, 5, channels)).astype(np.float32)
    return pred, index, mask, target


@pytest.mark.parametrize("channels", [2, 4])
def test_reg_l1_loss_matches_the_formula(channels):
    pred, index, mask, target = random_regression_case(4, channels)
    expected = l1_by_loops(pred, index, mask, target)
    loss = reg_l1_loss(*(torch.from_numpy(a) for a in (pred, index, mask, target)))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_reg_l1_loss_with_an_empty_mask_is_zero_with_zero_gradient():
    pred, index, mask, target = random_regression_case(5)
    pred = torch.from_numpy(pred).requires_grad_()
    loss = reg_l1_loss(pred, torch.from_numpy(index), torch.zeros(2, 5), torch.from_numpy(target))
    loss.backward()
    assert loss.item() == 0 and not pred.grad.any()


def test_reg_l1_loss_refuses_a_channel_mismatch():
    pred, index, mask, target = random_regression_case(6)
    with pytest.raises(ValueError, match="channels"):
        reg_l1_loss(torch.from_numpy(pred), torch.from_numpy(index), torch.from_numpy(mask),
                    torch.zeros(2, 5, 4))


def test_centernet_loss_is_the_weighted_sum_of_its_parts():
    logits, heatmap = random_heatmap_case(7)
    wh, index, mask, wh_target = random_regression_case(8)
    offset, _, _, offset_target = random_regression_case(9)
    outputs = {"heatmap": logits, "wh": wh, "offset": offset}
    targets = {"heatmap": heatmap, "wh": wh_target, "offset": offset_target, "index": index, "mask": mask}
    outputs = {k: torch.from_numpy(v).requires_grad_() for k, v in outputs.items()}
    targets = {k: torch.from_numpy(v) for k, v in targets.items()}

    losses = CenterNetLoss()(outputs, targets)
    heatmap_loss = focal_loss_by_loops(logits, heatmap)
    wh_loss = l1_by_loops(wh, index, mask, wh_target)
    offset_loss = l1_by_loops(offset, index, mask, offset_target)
    assert losses["heatmap_loss"].item() == pytest.approx(heatmap_loss, rel=1e-5)
    assert losses["wh_loss"].item() == pytest.approx(wh_loss, rel=1e-5)
    assert losses["offset_loss"].item() == pytest.approx(offset_loss, rel=1e-5)
    assert losses["loss"].item() == pytest.approx(heatmap_loss + 0.1 * wh_loss + offset_loss, rel=1e-5)

    weighted = CenterNetLoss(heatmap_weight=2.0, wh_weight=0.0, offset_weight=0.5)(outputs, targets)
    assert weighted["loss"].item() == pytest.approx(2 * heatmap_loss + 0.5 * offset_loss, rel=1e-5)

    losses["loss"].backward()
    assert all(torch.isfinite(t.grad).all() and t.grad.any() for t in outputs.values())
