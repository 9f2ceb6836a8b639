"""CenterNet's up-sampling neck: DLAUp + IDAUp (PaddleDetection's ``CenterNetDLAFPN``).

Iterative deep aggregation merges a pyramid of feature maps from the coarsest level down: each
coarser map is projected (3x3 conv, DCNv2 by default), up-sampled by a grouped transposed
convolution initialised to bilinear interpolation, added to the finer map and refined by another
3x3 conv. ``DLAUp`` repeats this so every level has seen all coarser ones; ``IDAUp`` then fuses
the chosen levels into one map at stride ``down_ratio``. Structure and state-dict names follow
``ppdet/modeling/necks/centernet_fpn.py`` (paddledet 2.6.0).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvNormLayer

__all__ = ["CenterNetDLAFPN", "DLAUp", "IDAUp", "bilinear_kernel_"]


@torch.no_grad()
def bilinear_kernel_(up: nn.ConvTranspose2d):
    """Fill a grouped ConvTranspose2d (weight [C, 1, 2f, 2f]) with bilinear up-sampling weights."""
    kernel_size = up.weight.shape[2]
    factor = math.ceil(kernel_size / 2)
    center = (2 * factor - 1 - factor % 2) / (2.0 * factor)
    taps = 1 - torch.abs(torch.arange(kernel_size, dtype=torch.float64) / factor - center)
    up.weight.copy_(torch.outer(taps, taps).to(up.weight.dtype).expand_as(up.weight))


def _conv_relu(in_channels, out_channels, dcn_v2, bound):
    """3x3 ConvNorm (DCNv2 with bias, or plain without) + ReLU; weights uniform(-bound, bound)."""
    layer = ConvNormLayer(in_channels, out_channels, 3, use_dcn=dcn_v2, bias=dcn_v2)
    nn.init.uniform_(layer.weight, -bound, bound)
    return nn.Sequential(layer, nn.ReLU())


class IDAUp(nn.Module):
    """Iterative deep aggregation over levels with ``in_channels`` and relative ``up_strides``.

    For each level ``i >= 1`` it owns ``proj_i`` (in_channels[i] -> out_channels), ``up_i``
    (x up_strides[i]) and ``node_i`` (out_channels -> out_channels). Level 0 must already have
    ``out_channels`` channels.
    """

    def __init__(self, in_channels, out_channels, up_strides, dcn_v2=True):
        super().__init__()
        for i in range(1, len(in_channels)):
            factor = int(up_strides[i])
            bound = 1.0 / math.sqrt(in_channels[i] * 9)
            proj = _conv_relu(in_channels[i], out_channels, dcn_v2, bound)
            up = nn.ConvTranspose2d(out_channels, out_channels, kernel_size=2 * factor,
                                    stride=factor, padding=factor // 2, groups=out_channels,
                                    bias=False)
            bilinear_kernel_(up)  # a trainable parameter that starts as bilinear interpolation
            node = _conv_relu(out_channels, out_channels, dcn_v2, bound)
            setattr(self, f"proj_{i}", proj)
            setattr(self, f"up_{i}", up)
            setattr(self, f"node_{i}", node)

    def forward(self, features, start_level, end_level):
        """Fuse ``features[start_level:end_level]`` IN PLACE: after the call ``features[i]``
        (for ``start_level < i < end_level``) holds the aggregate of levels ``start_level..i`` at
        the resolution of ``features[start_level]``. Returns the same list."""
        for i in range(start_level + 1, end_level):
            k = i - start_level
            x = getattr(self, f"proj_{k}")(features[i])
            x = getattr(self, f"up_{k}")(x)  # [B, C_out, H_{i-1}, W_{i-1}]
            features[i] = getattr(self, f"node_{k}")(x + features[i - 1])
        return features


class DLAUp(nn.Module):
    """Deep layer aggregation up path over backbone levels ``start_level`` and above.

    ``forward(features)`` takes the backbone's full list of maps and returns, finest first, one map
    per level from ``start_level`` on: level ``start_level + j`` aggregated with every coarser level
    at its own resolution with ``channels[j]`` channels; the last one is the coarsest map unchanged.
    """

    def __init__(self, start_level, channels, scales, dcn_v2=True):
        super().__init__()
        self.start_level = start_level
        channels = list(channels)
        in_channels = list(channels)
        scales = [int(s) for s in scales]
        for i in range(len(channels) - 1):
            j = -i - 2
            setattr(self, f"ida_{i}",
                    IDAUp(in_channels[j:], channels[j], [s // scales[j] for s in scales[j:]],
                          dcn_v2=dcn_v2))
            # the levels above j now hold maps at level j's resolution with channels[j] channels
            scales[j + 1:] = [scales[j]] * len(scales[j + 1:])
            in_channels[j + 1:] = [channels[j]] * len(in_channels[j + 1:])

    def forward(self, features):
        features = list(features)
        outs = [features[-1]]
        for i in range(len(features) - self.start_level - 1):
            getattr(self, f"ida_{i}")(features, len(features) - i - 2, len(features))
            outs.insert(0, features[-1])
        return outs


class CenterNetDLAFPN(nn.Module):
    """The CenterNet neck: backbone maps -> one map at stride 4.

    Args:
        in_channels: channels of every backbone output, finest first (DLA-34: 16 .. 512).
        first_level: index of the finest level used; ``None`` means ``log2(down_ratio)``.
        last_level: one past the last level fused by the final IDAUp.
        out_channel: channels of the output; 0 means ``in_channels[first_level]``.
        down_ratio: stride of ``features[first_level]``; if it is not 4 the fused map is
            up-sampled bilinearly (align_corners=True) by ``down_ratio // 4`` to stride 4.
        dcn_v2: DCNv2 (with bias) in every projection and node conv instead of plain 3x3 convs.

    Attribute ``out_channels`` (int): channels of the output map.
    """

    def __init__(self, in_channels, first_level=None, last_level=5, out_channel=0,
                 down_ratio=4, dcn_v2=True):
        super().__init__()
        in_channels = list(in_channels)
        self.first_level = int(math.log2(down_ratio)) if first_level is None else first_level
        if not 0 <= self.first_level < len(in_channels):
            raise ValueError(f"CenterNetDLAFPN: first_level {self.first_level} must be in "
                             f"[0, {len(in_channels) - 1}] for {len(in_channels)} input levels")
        if not self.first_level < last_level <= len(in_channels):
            raise ValueError(f"CenterNetDLAFPN: last_level {last_level} must be in "
                             f"({self.first_level}, {len(in_channels)}]")
        if down_ratio % 4:
            raise ValueError(f"CenterNetDLAFPN: down_ratio {down_ratio} must be a multiple of 4")
        self.last_level = last_level
        self.down_ratio = down_ratio
        self.out_channels = out_channel or in_channels[self.first_level]
        used = in_channels[self.first_level:]
        self.dla_up = DLAUp(self.first_level, used, [2 ** i for i in range(len(used))],
                            dcn_v2=dcn_v2)
        num_fused = last_level - self.first_level
        self.ida_up = IDAUp(in_channels[self.first_level:last_level], self.out_channels,
                            [2 ** i for i in range(num_fused)], dcn_v2=dcn_v2)

    def forward(self, features):
        levels = self.dla_up(features)  # finest first: [B, C_l, H / 2**l, W / 2**l]
        fused = self.ida_up(levels[: self.last_level - self.first_level], 0,
                            self.last_level - self.first_level)[-1]  # [B, C_out, H/dr, W/dr]
        if self.down_ratio != 4:
            fused = F.interpolate(fused, scale_factor=self.down_ratio // 4, mode="bilinear",
                                  align_corners=True)  # [B, C_out, H/4, W/4]
        return fused
