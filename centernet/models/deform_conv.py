"""Modulated deformable convolution (DCNv2), laid out as PaddleDetection's ``DeformableConvV2``.

The layer predicts, with an ordinary convolution ``conv_offset``, ``3 * k * k`` channels per output
pixel: the first ``2 * k * k`` are the sampling offsets, the last ``k * k`` the mask logits (passed
through a sigmoid). ``conv_dcn`` holds the deformable kernel's ``weight`` and ``bias``. These are the
names and shapes of Paddle's state dict, so Paddle weights load unchanged.

Offset layout: for kernel tap ``t = i * k + j`` channel ``2t`` is the y (row) offset and ``2t + 1``
the x (column) offset. Paddle's kernel (``ModulatedDeformableIm2col`` in phi) and
``torchvision.ops.deform_conv2d`` read offsets in this same interleaved (y, x) order and both
sample bilinearly with zeros outside the input, so no permutation is needed.
"""

import math

import torch
from torch import nn
from torchvision.ops import deform_conv2d

__all__ = ["DeformConv2d", "modulated_deform_conv2d"]


def modulated_deform_conv2d(x, offset, mask, weight, bias=None, stride=1, padding=0, dilation=1):
    """Modulated deformable convolution (one deformable group).

    Args:
        x: input ``[B, C_in, H, W]``.
        offset: ``[B, 2*k*k, H_out, W_out]``, (y, x) pairs per kernel tap ``t = i * k + j``.
        mask: ``[B, k*k, H_out, W_out]`` modulation (already through the sigmoid).
        weight: ``[C_out, C_in / groups, k, k]``; bias ``[C_out]`` or None.
    Returns ``[B, C_out, H_out, W_out]``.
    """
    return deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding,
                         dilation=dilation, mask=mask)


class DeformConv2d(nn.Module):
    """Modulated deformable 3x3 (or k x k) convolution with its own offset/mask predictor.

    Args:
        in_channels, out_channels: channels of the input and the output.
        kernel_size: side of the square kernel (one deformable group).
        stride, dilation, groups: as for ``nn.Conv2d``.
        padding: padding of the deformable conv; ``None`` gives Paddle's
            ``(kernel_size - 1) // 2 * dilation`` (the offset conv always uses ``(k - 1) // 2``).
        bias: whether the deformable conv has a bias (Paddle's ConvNormLayer always gives it one).
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=None,
                 dilation=1, groups=1, bias=True):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = (kernel_size - 1) // 2 * dilation if padding is None else padding
        self.dilation = dilation
        taps = kernel_size * kernel_size
        # Offsets and mask logits; zero-initialised so a new layer starts as a plain conv with mask 0.5.
        self.conv_offset = nn.Conv2d(in_channels, 3 * taps, kernel_size, stride=stride,
                                     padding=(kernel_size - 1) // 2)
        # Holds the deformable kernel (``weight [out, in/groups, k, k]``, ``bias [out]``).
        self.conv_dcn = _DeformKernel(in_channels, out_channels, kernel_size, groups, bias)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x):
        taps = self.kernel_size * self.kernel_size
        offset_mask = self.conv_offset(x)  # [B, 3*k*k, H_out, W_out]
        offset = offset_mask[:, : 2 * taps]  # [B, 2*k*k, H_out, W_out], (y, x) per tap
        mask = torch.sigmoid(offset_mask[:, 2 * taps:])  # [B, k*k, H_out, W_out]
        return modulated_deform_conv2d(x, offset, mask, self.conv_dcn.weight,
                                       self.conv_dcn.bias, stride=self.stride,
                                       padding=self.padding, dilation=self.dilation)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}")


class _DeformKernel(nn.Module):
    """Parameter holder named like Paddle's ``DeformConv2D`` (``conv_dcn.weight``, ``conv_dcn.bias``)."""

    def __init__(self, in_channels, out_channels, kernel_size, groups, bias):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"DeformConv2d: in_channels {in_channels} and out_channels "
                             f"{out_channels} must be divisible by groups {groups}")
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        # Paddle's default conv init: normal with std sqrt(2 / fan_in); owners may re-initialise.
        fan_in = in_channels // groups * kernel_size * kernel_size
        nn.init.normal_(self.weight, std=math.sqrt(2.0 / fan_in))

    def extra_repr(self):
        out_channels, in_per_group, k, _ = self.weight.shape
        return f"weight=[{out_channels}, {in_per_group}, {k}, {k}], bias={self.bias is not None}"
