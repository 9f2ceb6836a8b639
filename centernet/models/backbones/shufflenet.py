"""ShuffleNetV2 as PaddleDetection builds it (feature maps for CenterNet's neck).

Structure and state-dict names follow ``ppdet/modeling/backbones/shufflenet_v2.py`` (paddledet
2.6.0), so Paddle weights load after the BatchNorm rename: the stem ``_conv1`` (3x3/2 ConvBN) and a
3x3/2 max-pool, then blocks named ``2_1`` .. ``2_4``, ``3_1`` .. ``3_8``, ``4_1`` .. ``4_4``; the
first block of each stage is the down-sampling unit (``_conv_dw_1``, ``_conv_linear_1``,
``_conv_pw_2``, ``_conv_dw_2``, ``_conv_linear_2``), the others split the channels in half and
transform one half (``_conv_pw``, ``_conv_dw``, ``_conv_linear``). Every unit ends with a channel
shuffle of two groups.

``feature_maps`` numbers the stem 1 and the blocks 2 .. 17, as Paddle does. Paddle's released
backbone never returns the stem; we also accept 1 (the stem after max-pool, stride 4), which a
pre-release PaddleDetection CenterNet config used (see docs/models.md).
"""

import torch
from torch import nn

from .mobilenet import ConvBNLayer

__all__ = ["ShuffleNetV2", "channel_shuffle"]

# scale -> channels of the stem and of stages 2, 3, 4 (Paddle's table; the 1x1 last conv is unused)
STAGE_CHANNELS = {0.25: (24, 24, 48, 96), 0.33: (24, 32, 64, 128), 0.5: (24, 48, 96, 192),
                  1.0: (24, 116, 232, 464), 1.5: (24, 176, 352, 704), 2.0: (24, 244, 488, 976)}
STAGE_REPEATS = (4, 8, 4)


def channel_shuffle(x, groups):
    """Interleave the channels of ``groups`` equal groups: [B, g*c, H, W] -> [B, c*g, H, W]."""
    batch, channels, height, width = x.shape
    x = x.reshape(batch, groups, channels // groups, height, width).transpose(1, 2)
    return x.reshape(batch, channels, height, width)


class InvertedResidual(nn.Module):
    """Keep half the channels; 1x1 -> 3x3 depthwise -> 1x1 on the other half; concat; shuffle."""

    def __init__(self, channels, act):
        super().__init__()
        half = channels // 2
        self._conv_pw = ConvBNLayer(half, half, 1, act=act)
        self._conv_dw = ConvBNLayer(half, half, 3, groups=half, act=None)
        self._conv_linear = ConvBNLayer(half, half, 1, act=act)

    def forward(self, x):
        kept, transformed = x.chunk(2, dim=1)
        transformed = self._conv_linear(self._conv_dw(self._conv_pw(transformed)))
        return channel_shuffle(torch.cat([kept, transformed], dim=1), 2)


class InvertedResidualDS(nn.Module):
    """Down-sampling unit: two strided branches (depthwise -> 1x1, and 1x1 -> depthwise -> 1x1)."""

    def __init__(self, in_channels, out_channels, act):
        super().__init__()
        half = out_channels // 2
        self._conv_dw_1 = ConvBNLayer(in_channels, in_channels, 3, 2, groups=in_channels, act=None)
        self._conv_linear_1 = ConvBNLayer(in_channels, half, 1, act=act)
        self._conv_pw_2 = ConvBNLayer(in_channels, half, 1, act=act)
        self._conv_dw_2 = ConvBNLayer(half, half, 3, 2, groups=half, act=None)
        self._conv_linear_2 = ConvBNLayer(half, half, 1, act=act)

    def forward(self, x):
        left = self._conv_linear_1(self._conv_dw_1(x))  # [B, C_out/2, H/2, W/2]
        right = self._conv_linear_2(self._conv_dw_2(self._conv_pw_2(x)))
        return channel_shuffle(torch.cat([left, right], dim=1), 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2: ``forward(images)`` -> the maps numbered in ``feature_maps`` (CenterNet:
    ``[5, 13, 17]``, the ends of stages 2, 3, 4 at strides 8, 16, 32).

    Args:
        scale: width multiplier, one of 0.25, 0.33, 0.5, 1.0, 1.5, 2.0.
        act: activation of the 1x1 convs and the stem ("relu", "leaky_relu", "hard_swish").
    """

    def __init__(self, scale=1.0, act="relu", feature_maps=(5, 13, 17)):
        super().__init__()
        if scale not in STAGE_CHANNELS:
            raise ValueError(f"ShuffleNetV2: scale {scale} not supported; "
                             f"choose from {sorted(STAGE_CHANNELS)}")
        num_blocks = sum(STAGE_REPEATS)
        self.feature_maps = list(feature_maps)
        if not self.feature_maps or not set(self.feature_maps) <= set(range(1, num_blocks + 2)):
            raise ValueError(f"ShuffleNetV2: feature_maps {self.feature_maps} must be non-empty "
                             f"numbers in 1..{num_blocks + 1} (1 is the stem)")
        channels = STAGE_CHANNELS[scale]
        self._conv1 = ConvBNLayer(3, channels[0], 3, stride=2, act=act)
        self._max_pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.block_names = []
        self.out_channels, self.strides = [], []
        if 1 in self.feature_maps:
            self.out_channels.append(channels[0])
            self.strides.append(4)
        index = 1
        for stage, repeats in enumerate(STAGE_REPEATS):
            in_channels, out_channels = channels[stage], channels[stage + 1]
            for i in range(repeats):
                name = f"{stage + 2}_{i + 1}"
                block = (InvertedResidualDS(in_channels, out_channels, act) if i == 0
                         else InvertedResidual(out_channels, act))
                self.add_module(name, block)
                self.block_names.append(name)
                index += 1
                if index in self.feature_maps:
                    self.out_channels.append(out_channels)
                    self.strides.append(8 * 2 ** stage)

    def forward(self, images):
        x = self._max_pool(self._conv1(images))  # [B, 24, H/4, W/4]
        outs = [x] if 1 in self.feature_maps else []
        for index, name in enumerate(self.block_names, start=2):
            x = getattr(self, name)(x)
            if index in self.feature_maps:
                outs.append(x)
        return outs
