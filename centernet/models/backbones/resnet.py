"""ResNet-vd (bottleneck ResNet with the "bag of tricks" stem and shortcut) as PaddleDetection builds it.

Structure and state-dict names follow ``ppdet/modeling/backbones/resnet.py`` (paddledet 2.6.0),
so Paddle weights load after the BatchNorm rename (``_mean`` -> ``running_mean``, ``_variance``
-> ``running_var``):

- ``conv1.conv1_1`` .. ``conv1.conv1_3``: three 3x3 ConvNorm+ReLU (the "d" stem), then a 3x3/2
  max-pool;
- ``res2`` .. ``res5``: bottleneck blocks ``res2a``, ``res2b``, ... (``res4b1``, ``res4b2``, ...
  when stage 4 has more than 10 blocks); the 3x3 conv carries the stride, and a down-sampling
  shortcut is ``short.pool`` (2x2 average pool) + ``short.conv`` (1x1 ConvNorm);
- every ConvNorm is ``conv`` + ``norm``; with DCNv2 the 3x3 conv is a deformable conv ``conv``
  (weight only) whose offsets and mask come from the ordinary conv ``conv_offset``.

``freeze_norm`` (Paddle's default, kept by CenterNet) leaves every BatchNorm's scale and bias
untrained (``requires_grad=False``). The running statistics still update in training mode: that
is what Paddle does in its multi-GPU ``sync_bn`` training, where the conversion to SyncBatchNorm
drops Paddle's ``use_global_stats`` flag (on one GPU Paddle would also freeze the statistics).
"""

from collections import OrderedDict

import torch
from torch import nn

from ..deform_conv import DeformableLayer, modulated_deform_conv2d
from ..layers import paddle_default_init_

__all__ = ["ResNet", "BottleNeck", "ConvNormLayer"]

BLOCKS_PER_STAGE = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class ConvNormLayer(DeformableLayer, nn.Module):
    """Conv (or DCNv2) + BatchNorm + optional ReLU, named as Paddle's ResNet ``ConvNormLayer``.

    It differs from :class:`centernet.models.layers.ConvNormLayer` (the neck's) as Paddle's two
    classes do: the offset conv sits beside the kernel (``conv_offset``, ``conv``) instead of
    inside a ``DeformableConvV2`` (``conv.conv_offset``, ``conv.conv_dcn``), and there is no bias.

    The DCNv2 form predicts ``3 * k * k`` channels with ``conv_offset``: the first ``2 * k * k`` are
    (y, x) offsets per kernel tap (the layout of both Paddle's and torchvision's deformable conv),
    the last ``k * k`` the mask logits. ``conv_offset`` starts at zero, as in Paddle. ``conv``
    then only holds the kernel (``conv.weight``, no bias, as Paddle's ``DeformConv2D`` here) and
    its geometry; it is applied by :func:`modulated_deform_conv2d` at the predicted positions.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, relu=False,
                 freeze_norm=True, dcn_v2=False):
        super().__init__()
        padding = (kernel_size - 1) // 2
        self.relu = relu
        self.dcn_v2 = dcn_v2
        if dcn_v2:
            self.conv_offset = nn.Conv2d(in_channels, 3 * kernel_size ** 2, kernel_size,
                                         stride=stride, padding=padding)
            nn.init.zeros_(self.conv_offset.weight)
            nn.init.zeros_(self.conv_offset.bias)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, bias=False)
        paddle_default_init_(self.conv)
        self.norm = nn.BatchNorm2d(out_channels)
        if freeze_norm:
            self.norm.weight.requires_grad_(False)
            self.norm.bias.requires_grad_(False)

    def forward(self, x):
        if self.dcn_v2:
            offset_mask = self.conv_offset(x)  # [B, 3*k*k, H_out, W_out]
            taps = offset_mask.shape[1] // 3
            offset, mask = offset_mask.split([2 * taps, taps], dim=1)
            x = modulated_deform_conv2d(x, offset, torch.sigmoid(mask), self.conv.weight,
                                        stride=self.conv.stride, padding=self.conv.padding,
                                        implementation=self.implementation)
        else:
            x = self.conv(x)
        x = self.norm(x)
        return torch.relu(x) if self.relu else x


class BottleNeck(nn.Module):
    """1x1 -> 3x3 (stride, optional DCNv2) -> 1x1 (x4 channels), plus the vd shortcut."""

    expansion = 4

    def __init__(self, in_channels, channels, stride, shortcut, freeze_norm=True, dcn_v2=False):
        super().__init__()
        out_channels = channels * self.expansion
        self.shortcut = shortcut
        if not shortcut:
            if stride == 2:  # vd: average-pool first so the 1x1 projection sees every pixel
                self.short = nn.Sequential(OrderedDict(
                    pool=nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False),
                    conv=ConvNormLayer(in_channels, out_channels, 1, freeze_norm=freeze_norm)))
            else:
                self.short = ConvNormLayer(in_channels, out_channels, 1, stride=stride,
                                           freeze_norm=freeze_norm)
        self.branch2a = ConvNormLayer(in_channels, channels, 1, relu=True, freeze_norm=freeze_norm)
        self.branch2b = ConvNormLayer(channels, channels, 3, stride=stride, relu=True,
                                      freeze_norm=freeze_norm, dcn_v2=dcn_v2)
        self.branch2c = ConvNormLayer(channels, out_channels, 1, freeze_norm=freeze_norm)

    def forward(self, x):
        out = self.branch2c(self.branch2b(self.branch2a(x)))
        return torch.relu(out + (x if self.shortcut else self.short(x)))


def _block_name(stage, count, i):
    """Paddle's block names: ``res3a``, ``res3b``, ...; ``res4a``, ``res4b1``, ... for long stages."""
    if count > 10 and stage == 4:
        return f"res{stage}a" if i == 0 else f"res{stage}b{i}"
    return f"res{stage}{chr(ord('a') + i)}"


class ResNet(nn.Module):
    """ResNet-vd backbone: ``forward(images [B,3,H,W])`` -> the stages in ``return_idx``.

    Args:
        depth: 50, 101 or 152.
        return_idx: which of the four stages (strides 4, 8, 16, 32) to return.
        dcn_v2_stages: stages whose 3x3 convs are DCNv2 (CenterNet's R50: ``[3]``, the last).
        freeze_norm: keep BatchNorm scale and bias fixed (see the module docstring).
        freeze_at: freeze the stem and stages ``0..freeze_at`` entirely (-1: nothing).

    Attributes ``out_channels`` and ``strides`` describe the returned maps.
    """

    def __init__(self, depth=50, return_idx=(0, 1, 2, 3), dcn_v2_stages=(), freeze_norm=True,
                 freeze_at=-1):
        super().__init__()
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"ResNet: depth {depth} not supported; "
                             f"choose from {sorted(BLOCKS_PER_STAGE)}")
        if not set(return_idx) <= {0, 1, 2, 3} or not set(dcn_v2_stages) <= {0, 1, 2, 3}:
            raise ValueError(f"ResNet: return_idx {list(return_idx)} and dcn_v2_stages "
                             f"{list(dcn_v2_stages)} must be stage indices in 0..3")
        self.return_idx = list(return_idx)
        stem = [(3, 32, 2), (32, 32, 1), (32, 64, 1)]  # (in, out, stride) of conv1_1 .. conv1_3
        self.conv1 = nn.Sequential(OrderedDict(
            (f"conv1_{i + 1}", ConvNormLayer(c_in, c_out, 3, stride=s, relu=True,
                                             freeze_norm=freeze_norm))
            for i, (c_in, c_out, s) in enumerate(stem)))
        self.max_pool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        stage_channels = (64, 128, 256, 512)
        for i, count in enumerate(BLOCKS_PER_STAGE[depth]):
            stage = i + 2
            blocks = OrderedDict()
            for j in range(count):
                blocks[_block_name(stage, count, j)] = BottleNeck(
                    in_channels, stage_channels[i], stride=2 if j == 0 and stage != 2 else 1,
                    shortcut=j > 0, freeze_norm=freeze_norm, dcn_v2=i in dcn_v2_stages)
                in_channels = stage_channels[i] * BottleNeck.expansion
            self.add_module(f"res{stage}", nn.Sequential(blocks))
        self.out_channels = [stage_channels[i] * BottleNeck.expansion for i in self.return_idx]
        self.strides = [4 * 2 ** i for i in self.return_idx]
        if freeze_at >= 0:
            for module in [self.conv1] + [getattr(self, f"res{i + 2}") for i in range(freeze_at + 1)]:
                module.requires_grad_(False)

    def forward(self, images):
        x = self.max_pool(self.conv1(images))  # [B, 64, H/4, W/4]
        outs = []
        for i in range(4):
            x = getattr(self, f"res{i + 2}")(x)  # [B, 256 * 2**i, H / 2**(i+2), W / 2**(i+2)]
            if i in self.return_idx:
                outs.append(x)
        return outs
