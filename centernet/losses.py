"""CenterNet's training loss: focal loss on the center heatmap, L1 on sizes and offsets.

The formulas and normalisations are PaddleDetection's (``CTFocalLoss`` and
``CenterNetHead.get_loss``), which are those of the original CenterNet. Everything is computed
in float32 at least (float64 outputs stay float64), so the loss is safe to call on half-precision
outputs under AMP.
"""

from __future__ import annotations

import torch
from torch import nn


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def focal_loss(heatmap_logits: torch.Tensor, heatmap_target: torch.Tensor) -> torch.Tensor:
    """CornerNet's penalty-reduced focal loss (alpha 2, beta 4) on logits ``[B, C, H, W]``.

    ``p = clamp(sigmoid(logits), 1e-4, 1 - 1e-4)``; pixels whose target is exactly 1 are
    positives and contribute ``-(1 - p)^2 log p``; all others contribute
    ``-(1 - target)^4 p^2 log(1 - p)``. The sum over the whole batch is divided by the number
    of positives in the batch, or by 1 when there are none.
    """
    prob = _at_least_float32(heatmap_logits).sigmoid().clamp(1e-4, 1 - 1e-4)
    target = heatmap_target.to(prob.dtype)
    positive = target.eq(1).to(prob.dtype)
    negative = target.lt(1).to(prob.dtype)
    positive_loss = -(prob.log() * (1 - prob).pow(2) * positive).sum()
    negative_loss = -((1 - prob).log() * prob.pow(2) * (1 - target).pow(4) * negative).sum()
    num_positive = positive.sum()
    return (positive_loss + negative_loss) / (num_positive + num_positive.eq(0).to(prob.dtype))


def reg_l1_loss(pred: torch.Tensor, index: torch.Tensor, mask: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
    """L1 loss of a regression map at the object centers.

    ``pred [B, D, H, W]`` is read at ``index [B, M]`` (flat ``y * W + x``) and compared with
    ``target [B, M, D]`` where ``mask [B, M]`` is set. The summed error is divided by
    ``mask.sum() * D + 1e-4`` (the mask expanded over the D channels), as in PaddleDetection.
    """
    batch, channels = pred.shape[:2]
    if target.shape[-1] != channels:
        raise ValueError(f"reg_l1_loss: prediction has {channels} channels, target {target.shape[-1]}")
    flat = _at_least_float32(pred).flatten(2)  # [B, D, H*W]
    gathered = flat.gather(2, index.long().unsqueeze(1).expand(batch, channels, -1))  # [B, D, M]
    gathered = gathered.transpose(1, 2)  # [B, M, D]
    mask = mask.to(gathered.dtype).unsqueeze(2).expand_as(gathered)  # [B, M, D]
    error = ((gathered - target.to(gathered.dtype)).abs() * mask).sum()
    return error / (mask.sum() + 1e-4)


class CenterNetLoss(nn.Module):
    """Weighted sum of the heatmap focal loss and the wh / offset L1 losses.

    ``forward(outputs, targets)`` takes the model's dict (``heatmap`` logits, ``wh``, ``offset``)
    and the batched targets of :func:`centernet.targets.build_targets` (``heatmap``, ``wh``,
    ``offset``, ``index``, ``mask``) and returns ``loss`` (the weighted total, to back-propagate)
    with its parts ``heatmap_loss``, ``wh_loss`` and ``offset_loss`` (unweighted).
    """

    def __init__(self, heatmap_weight: float = 1.0, wh_weight: float = 0.1, offset_weight: float = 1.0):
        super().__init__()
        self.heatmap_weight = heatmap_weight
        self.wh_weight = wh_weight
        self.offset_weight = offset_weight

    def forward(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        heatmap_loss = focal_loss(outputs["heatmap"], targets["heatmap"])
        wh_loss = reg_l1_loss(outputs["wh"], targets["index"], targets["mask"], targets["wh"])
        offset_loss = reg_l1_loss(outputs["offset"], targets["index"], targets["mask"], targets["offset"])
        loss = (self.heatmap_weight * heatmap_loss + self.wh_weight * wh_loss
                + self.offset_weight * offset_loss)
        return {"loss": loss, "heatmap_loss": heatmap_loss, "wh_loss": wh_loss, "offset_loss": offset_loss}

    def extra_repr(self) -> str:
        return f"heatmap_weight={self.heatmap_weight}, wh_weight={self.wh_weight}, offset_weight={self.offset_weight}"
