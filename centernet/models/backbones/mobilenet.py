"""MobileNetV1 and MobileNetV3 as PaddleDetection builds them (feature maps for CenterNet's neck).

Structure and state-dict names follow ``ppdet/modeling/backbones/mobilenet_v1.py`` and
``mobilenet_v3.py`` (paddledet 2.6.0), so Paddle weights load after the BatchNorm rename:

- V1: ``conv1`` then depthwise-separable blocks ``conv2_1`` .. ``conv6``, each a
  ``_depthwise_conv`` and a ``_pointwise_conv`` ConvBN (``_conv`` + ``_batch_norm``);
- V3: ``conv1`` then inverted residual blocks ``conv2`` .. ``conv16`` (large) or ``conv12``
  (small), each ``expand_conv``, ``bottleneck_conv``, optional ``mid_se`` (``conv1``, ``conv2``)
  and ``linear_conv``, every ConvBN being ``conv`` + ``bn``.

``feature_maps`` counts blocks as Paddle does (V1: the n-th separable block; V3: block ``conv{n}``).
Paddle's SSD extra blocks are not built (CenterNet does not use them).
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import paddle_default_init_

__all__ = ["MobileNetV1", "MobileNetV3", "ConvBNLayer", "ACTIVATIONS", "make_divisible"]

ACTIVATIONS = {None: nn.Identity, "relu": nn.ReLU, "relu6": nn.ReLU6,
               "hard_swish": nn.Hardswish, "leaky_relu": nn.LeakyReLU}


class ConvBNLayer(nn.Module):
    """Conv (no bias) + BatchNorm + activation, named ``_conv`` / ``_batch_norm`` as in Paddle's
    MobileNetV1 and ShuffleNetV2. Weights start Kaiming-normal (fan in), as in Paddle."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1, act="relu"):
        super().__init__()
        self._conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                               padding=(kernel_size - 1) // 2, groups=groups, bias=False)
        nn.init.kaiming_normal_(self._conv.weight, nonlinearity="relu")
        self._batch_norm = nn.BatchNorm2d(out_channels)
        self.act = ACTIVATIONS[act]()

    def forward(self, x):
        return self.act(self._batch_norm(self._conv(x)))


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise ConvBN+ReLU then 1x1 pointwise ConvBN+ReLU."""

    def __init__(self, in_channels, dw_channels, out_channels, groups, stride):
        super().__init__()
        self._depthwise_conv = ConvBNLayer(in_channels, dw_channels, 3, stride, groups=groups)
        self._pointwise_conv = ConvBNLayer(dw_channels, out_channels, 1)

    def forward(self, x):
        return self._pointwise_conv(self._depthwise_conv(x))


# name, depthwise channels, output channels, stride (before scaling), in Paddle's order
MOBILENET_V1_BLOCKS = (
    ("conv2_1", 32, 64, 1), ("conv2_2", 64, 128, 2), ("conv3_1", 128, 128, 1),
    ("conv3_2", 128, 256, 2), ("conv4_1", 256, 256, 1), ("conv4_2", 256, 512, 2),
    *((f"conv5_{i}", 512, 512, 1) for i in range(1, 6)),
    ("conv5_6", 512, 1024, 2), ("conv6", 1024, 1024, 1),
)


class _NumberedBlocks(nn.Module):
    """A stride-2 stem ``conv1``, then blocks numbered as Paddle numbers them (from ``first``);
    ``forward(images)`` returns the outputs of the blocks numbered in ``feature_maps``, whose
    ``out_channels`` and ``strides`` it records."""

    def __init__(self, family, feature_maps, first, count):
        super().__init__()
        self.feature_maps = list(feature_maps)
        valid = range(first, first + count)
        if not self.feature_maps or not set(self.feature_maps) <= set(valid):
            raise ValueError(f"{family}: feature_maps {self.feature_maps} must be non-empty block numbers "
                             f"in {min(valid)}..{max(valid)}")
        self.first = first
        self.block_names, self.out_channels, self.strides = [], [], []
        self._stride = 2  # the stem's

    def add_block(self, name, block, out_channels, stride):
        """Append ``block`` (module name ``name``) with its output width and stride."""
        self.add_module(name, block)
        self.block_names.append(name)
        self._stride *= stride
        if self.first + len(self.block_names) - 1 in self.feature_maps:
            self.out_channels.append(out_channels)
            self.strides.append(self._stride)

    def forward(self, images):
        x = self.conv1(images)  # [B, C, H/2, W/2]
        outs = []
        for index, name in enumerate(self.block_names, start=self.first):
            x = getattr(self, name)(x)
            if index in self.feature_maps:
                outs.append(x)
        return outs


class MobileNetV1(_NumberedBlocks):
    """MobileNetV1: ``forward(images)`` -> the outputs of the separable blocks in ``feature_maps``
    (1-based; CenterNet uses ``[3, 5, 11, 13]``: strides 4, 8, 16, 32)."""

    def __init__(self, scale=1.0, feature_maps=(4, 6, 13)):
        super().__init__("MobileNetV1", feature_maps, 1, len(MOBILENET_V1_BLOCKS))
        in_channels = int(32 * scale)
        self.conv1 = ConvBNLayer(3, in_channels, 3, stride=2)
        for name, dw_channels, out_channels, block_stride in MOBILENET_V1_BLOCKS:
            # Paddle scales the depthwise width and its groups separately; equal for real scales
            self.add_block(name, DepthwiseSeparable(in_channels, int(dw_channels * scale), int(out_channels * scale),
                                                    int(dw_channels * scale), block_stride),
                           int(out_channels * scale), block_stride)
            in_channels = int(out_channels * scale)


def make_divisible(value, divisor=8, min_value=None):
    """Round ``value`` to a multiple of ``divisor``, never below 90% of it (MobileNet's rule)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBN(nn.Module):
    """MobileNetV3's Conv (no bias) + BatchNorm + activation, named ``conv`` / ``bn``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1, act=None):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=(kernel_size - 1) // 2, groups=groups, bias=False)
        paddle_default_init_(self.conv)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = ACTIVATIONS[act]()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class SEModule(nn.Module):
    """Squeeze-excitation with Paddle's hard sigmoid ``clip(0.2 x + 0.5, 0, 1)`` (not x/6 + 0.5)."""

    def __init__(self, channels, reduction=4):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels // reduction, 1)
        self.conv2 = nn.Conv2d(channels // reduction, channels, 1)
        for conv in (self.conv1, self.conv2):
            paddle_default_init_(conv)

    def forward(self, x):
        weight = F.adaptive_avg_pool2d(x, 1)  # [B, C, 1, 1]
        weight = self.conv2(torch.relu(self.conv1(weight)))
        return x * (0.2 * weight + 0.5).clamp(0.0, 1.0)


class ResidualUnit(nn.Module):
    """Inverted residual: 1x1 expand -> k x k depthwise (stride) -> [SE] -> 1x1 linear (+ input)."""

    def __init__(self, in_channels, mid_channels, out_channels, kernel_size, stride, use_se, act):
        super().__init__()
        self.use_shortcut = stride == 1 and in_channels == out_channels
        self.expand_conv = ConvBN(in_channels, mid_channels, 1, act=act)
        self.bottleneck_conv = ConvBN(mid_channels, mid_channels, kernel_size, stride,
                                      groups=mid_channels, act=act)
        self.mid_se = SEModule(mid_channels) if use_se else nn.Identity()
        self.linear_conv = ConvBN(mid_channels, out_channels, 1)

    def forward(self, x):
        out = self.linear_conv(self.mid_se(self.bottleneck_conv(self.expand_conv(x))))
        return x + out if self.use_shortcut else out


# kernel, expanded channels, output channels, squeeze-excitation, activation, stride; three blocks a
# line, the first is conv2
MOBILENET_V3_BLOCKS = {
    "large": (
        (3, 16, 16, False, "relu", 1), (3, 64, 24, False, "relu", 2), (3, 72, 24, False, "relu", 1),
        (5, 72, 40, True, "relu", 2), (5, 120, 40, True, "relu", 1), (5, 120, 40, True, "relu", 1),
        (3, 240, 80, False, "hard_swish", 2), (3, 200, 80, False, "hard_swish", 1), (3, 184, 80, False, "hard_swish", 1),
        (3, 184, 80, False, "hard_swish", 1), (3, 480, 112, True, "hard_swish", 1), (3, 672, 112, True, "hard_swish", 1),
        (5, 672, 160, True, "hard_swish", 2), (5, 960, 160, True, "hard_swish", 1), (5, 960, 160, True, "hard_swish", 1),
    ),
    "small": (
        (3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2), (3, 88, 24, False, "relu", 1),
        (5, 96, 40, True, "hard_swish", 2), (5, 240, 40, True, "hard_swish", 1), (5, 240, 40, True, "hard_swish", 1),
        (5, 120, 48, True, "hard_swish", 1), (5, 144, 48, True, "hard_swish", 1), (5, 288, 96, True, "hard_swish", 2),
        (5, 576, 96, True, "hard_swish", 1), (5, 576, 96, True, "hard_swish", 1),
    ),
}


class MobileNetV3(_NumberedBlocks):
    """MobileNetV3 large or small: ``forward(images)`` -> the outputs of blocks ``conv{n}`` for n in
    ``feature_maps`` (CenterNet: large ``[4, 7, 13, 16]``, strides 4..32; small ``[4, 9, 12]``,
    strides 8, 16, 32)."""

    def __init__(self, model_name="large", scale=1.0, feature_maps=(6, 12, 15)):
        if model_name not in MOBILENET_V3_BLOCKS:
            raise ValueError(f"MobileNetV3: model_name {model_name!r} must be one of "
                             f"{sorted(MOBILENET_V3_BLOCKS)}")
        blocks = MOBILENET_V3_BLOCKS[model_name]
        super().__init__("MobileNetV3", feature_maps, 2, len(blocks))
        in_channels = make_divisible(16 * scale)
        self.conv1 = ConvBN(3, in_channels, 3, stride=2, act="hard_swish")
        for index, (kernel, expanded, out_channels, use_se, act, block_stride) in enumerate(blocks, start=2):
            out_channels = make_divisible(scale * out_channels)
            self.add_block(f"conv{index}", ResidualUnit(in_channels, make_divisible(scale * expanded), out_channels,
                                                        kernel, block_stride, use_se, act),
                           out_channels, block_stride)
            in_channels = out_channels
