"""CenterNet's prediction head: three small conv branches on the stride-4 map."""

import math
from collections import OrderedDict

from torch import nn

__all__ = ["CenterNetHead"]


def _conv(in_channels, out_channels, kernel_size):
    """A conv wrapped so its parameters are named ``<index>.conv.*`` as in PaddleDetection's head.

    Weights uniform(+-1/sqrt(fan_in)), bias 0 (Paddle's ``ConvLayer`` init)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    bound = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
    nn.init.uniform_(conv.weight, -bound, bound)
    nn.init.zeros_(conv.bias)
    return nn.Sequential(OrderedDict(conv=conv))


def _branch(in_channels, head_planes, out_channels):
    """conv3x3(in, head_planes) -> ReLU -> conv1x1(head_planes, out)."""
    return nn.Sequential(_conv(in_channels, head_planes, 3), nn.ReLU(),
                         _conv(head_planes, out_channels, 1))


class CenterNetHead(nn.Module):
    """Heatmap, box-size and offset branches (PaddleDetection's ``CenterNetHead`` layout).

    ``forward(features [B, C, H/4, W/4])`` returns a dict:
    ``heatmap [B, num_classes, H/4, W/4]`` class LOGITS (no sigmoid: the loss and the decoder apply
    it), ``wh [B, 2, H/4, W/4]`` box width and height in output pixels, ``offset [B, 2, H/4, W/4]``
    sub-pixel center offset (x, y). The size branch keeps Paddle's module name ``size`` so weights map one to one.

    The heatmap's last bias starts at ``prior_bias`` (-2.19 = -log((1 - 0.1) / 0.1), a prior
    foreground probability of 0.1) so the focal loss starts stable.
    """

    def __init__(self, in_channels, num_classes=80, head_planes=256, prior_bias=-2.19):
        super().__init__()
        self.num_classes = num_classes
        self.heatmap = _branch(in_channels, head_planes, num_classes)
        nn.init.constant_(self.heatmap[2].conv.bias, prior_bias)
        self.size = _branch(in_channels, head_planes, 2)
        self.offset = _branch(in_channels, head_planes, 2)

    def forward(self, features):
        return {
            "heatmap": self.heatmap(features),  # [B, num_classes, H/4, W/4] logits
            "wh": self.size(features),  # [B, 2, H/4, W/4]
            "offset": self.offset(features),  # [B, 2, H/4, W/4]
        }
