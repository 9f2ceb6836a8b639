"""Modulated deformable convolution (DCNv2), laid out as PaddleDetection's ``DeformableConvV2``.

The layer predicts, with an ordinary convolution ``conv_offset``, ``3 * k * k`` channels per output
pixel: the first ``2 * k * k`` are the sampling offsets, the last ``k * k`` the mask logits (passed
through a sigmoid). ``conv_dcn`` holds the deformable kernel's ``weight`` and ``bias``. These are the
names and shapes of Paddle's state dict, so Paddle weights load unchanged.

Offset layout: for kernel tap ``t = i * k + j`` channel ``2t`` is the y (row) offset and ``2t + 1``
the x (column) offset. Paddle's kernel (``ModulatedDeformableIm2col`` in phi) and
``torchvision.ops.deform_conv2d`` read offsets in this same interleaved (y, x) order and both
sample bilinearly with zeros outside the input, so no permutation is needed.

Implementations (``modulated_deform_conv2d``'s ``implementation``, a deformable layer's attribute
of that name): ``"torchvision"`` (the reference op), ``"gather"`` (the same numbers as a weighted
gather and a matmul, faster on CPU) and ``"onnx"``, the export form: while ``torch.onnx.export``
traces, one ONNX ``DeformConv`` node (opset 19); otherwise the gather path. Under ONNX export the
gather path writes its fused ``embedding_bag`` as Gather, Mul and ReduceSum, standard ONNX for
runtimes without ``DeformConv``. :func:`deform_conv_implementation` sets the implementation of every
deformable layer of a model for a ``with`` block (``centernet.export`` picks the export form so).
"""

import contextlib
import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

__all__ = ["DeformConv2d", "DeformableLayer", "IMPLEMENTATIONS", "deform_conv_implementation",
           "modulated_deform_conv2d", "gather_deform_conv2d"]

IMPLEMENTATIONS = ("auto", "torchvision", "gather", "onnx")


def modulated_deform_conv2d(x, offset, mask, weight, bias=None, stride=1, padding=0, dilation=1,
                            implementation="auto"):
    """Modulated deformable convolution (one deformable group).

    Args:
        x: input ``[B, C_in, H, W]``.
        offset: ``[B, 2*k*k, H_out, W_out]``, (y, x) pairs per kernel tap ``t = i * k + j``.
        mask: ``[B, k*k, H_out, W_out]`` modulation (already through the sigmoid).
        weight: ``[C_out, C_in / groups, k, k]``; bias ``[C_out]`` or None.
        implementation: ``"torchvision"`` (the reference op), ``"gather"`` (:func:`gather_deform_conv2d`,
            the same numbers faster on CPU, and exportable to ONNX), ``"onnx"`` (one ONNX
            ``DeformConv`` node when exported, the gather path otherwise) or ``"auto"``: gather for
            float CPU tensors without groups and during ONNX export, torchvision otherwise.
    Returns ``[B, C_out, H_out, W_out]``.
    """
    if implementation == "onnx":
        if torch.onnx.is_in_onnx_export():
            if bias is None:  # ONNX's DeformConv takes its optional bias before the mask: give zeros
                bias = torch.zeros_like(weight[:, 0, 0, 0])
            return _OnnxDeformConv.apply(x, offset, mask, weight, bias, _pair(stride), _pair(padding),
                                         _pair(dilation))
        implementation = "gather"
    if implementation == "auto":
        # torchvision's op has no ONNX export; the gather path exports to standard ONNX ops
        use_gather = torch.onnx.is_in_onnx_export() or (
            x.device.type == "cpu" and weight.shape[1] == x.shape[1]
            and x.dtype in (torch.float32, torch.float64))
        implementation = "gather" if use_gather else "torchvision"
    if implementation == "gather":
        return gather_deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation)
    if implementation == "torchvision":
        return deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding,
                             dilation=dilation, mask=mask)
    raise ValueError(f"unknown deformable conv implementation {implementation!r}; "
                     f"use one of {', '.join(IMPLEMENTATIONS)}")


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


class _OnnxDeformConv(torch.autograd.Function):
    """The modulated deformable conv as one ONNX ``DeformConv`` node (opset 19); computes the gather
    path while the exporter traces. No backward: the export form is for inference only."""

    @staticmethod
    def forward(ctx, x, offset, mask, weight, bias, stride, padding, dilation):
        return gather_deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation)

    @staticmethod
    def symbolic(g, x, offset, mask, weight, bias, stride, padding, dilation):
        # ONNX's input order is X, W, offset, B, mask; kernel_shape is read from W
        return g.op("DeformConv", x, weight, offset, bias, mask, strides_i=list(stride),
                    pads_i=[padding[0], padding[1], padding[0], padding[1]],
                    dilations_i=list(dilation), group_i=1, offset_group_i=1)


# Output pixels per im2col block when no gradient is needed: a block's columns (2.4 MB at 64
# channels) stay in cache between the gather that writes them and the matmul that reads them.
# Measured on 2 cores (1 thread, CPU time): 64->64 channels at 128x128, 55 ms per layer against
# 108 ms for one whole-image columns matrix; 256 to 2048 pixels differ little, and larger blocks
# mean fewer thread synchronisations on a busy machine.
INFERENCE_BLOCK_PIXELS = 1024


def gather_deform_conv2d(x, offset, mask, weight, bias=None, stride=1, padding=0, dilation=1):
    """The modulated deformable convolution as a weighted gather and a matmul.

    Every kernel tap of every output pixel reads the same four neighbouring pixels in all input
    channels, so the bilinear indices and weights (with the mask and the zero-outside rule folded
    in) are computed once per tap, not per channel. With the input laid out channels-last as a
    table of pixel rows, ``F.embedding_bag`` sums the four weighted rows of each tap in one fused
    pass, giving im2col columns ``[pixels, k*k*C_in]``; a matmul with the kernel finishes the
    convolution. Out-of-image corners point at an appended zero row. Without autograd (and
    outside tracing / ONNX export, which need one shape-independent graph) the work goes in
    blocks of output pixels so the columns stay in cache. Differentiable in x, offset,
    mask, weight and bias. Same arguments and result as :func:`modulated_deform_conv2d` (no
    groups); the result is channels-last in memory.
    """
    batch, channels, height, width = x.shape
    out_channels, in_per_group, kh, kw = weight.shape
    if in_per_group != channels:
        raise ValueError("gather_deform_conv2d does not support grouped convolution")
    out_h, out_w = offset.shape[-2:]
    taps = kh * kw
    index, weights = _bilinear_taps(offset, mask, (batch, height, width), (kh, kw),
                                    *map(_pair, (stride, padding, dilation)))
    table = torch.cat([x.permute(0, 2, 3, 1).reshape(-1, channels),
                       x.new_zeros(1, channels)])  # [B*H*W + 1, C_in], last row zero
    kernel = weight.permute(0, 2, 3, 1).reshape(out_channels, taps * channels).t()  # [k*k*C_in, C_out]

    def columns(start, end):  # im2col rows of output pixels [start, end): [end - start, k*k*C_in]
        taps_slice = slice(start * taps, end * taps)
        if torch.onnx.is_in_onnx_export():  # ONNX has no fused form: Gather, Mul, ReduceSum
            gathered = (table[index[taps_slice]] * weights[taps_slice, :, None]).sum(1)  # [taps, C_in]
        else:
            gathered = F.embedding_bag(index[taps_slice], table, mode="sum",
                                       per_sample_weights=weights[taps_slice])
        return gathered.view(end - start, taps * channels)

    pixels = batch * out_h * out_w
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, offset, mask, weight, bias))
    if needs_grad or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        out = columns(0, pixels) @ kernel
        out = out if bias is None else out + bias  # [B*Ho*Wo, C_out]
    else:
        out = x.new_empty(pixels, out_channels)
        for start in range(0, pixels, INFERENCE_BLOCK_PIXELS):
            end = min(pixels, start + INFERENCE_BLOCK_PIXELS)
            if bias is None:
                torch.mm(columns(start, end), kernel, out=out[start:end])
            else:
                torch.addmm(bias, columns(start, end), kernel, out=out[start:end])
    return out.view(batch, out_h, out_w, out_channels).permute(0, 3, 1, 2)  # [B, C_out, Ho, Wo]


def _bilinear_taps(offset, mask, input_size, kernel_size, stride, padding, dilation):
    """Indices and weights of the four bilinear corners of every sampling point.

    Returns ``index [B*Ho*Wo*taps, 4]`` (int64 rows of the ``[B*H*W + 1, C]`` pixel table; the last
    row is zero and takes every corner outside the image) and ``weights [B*Ho*Wo*taps, 4]``
    (bilinear weight times the mask), ordered by output pixel, then tap.
    """
    batch, height, width = input_size
    kh, kw = kernel_size
    out_h, out_w = offset.shape[-2:]
    taps = kh * kw
    # Sampling positions [B, Ho, Wo, taps]: output grid + tap position + learned offset.
    offset = offset.reshape(batch, taps, 2, out_h, out_w).permute(0, 3, 4, 1, 2)  # [B,Ho,Wo,taps,2]
    arange = functools.partial(torch.arange, dtype=offset.dtype, device=offset.device)
    tap_y = (arange(kh) * dilation[0]).repeat_interleave(kw)  # [taps]
    tap_x = (arange(kw) * dilation[1]).repeat(kh)
    y = (arange(out_h) * stride[0] - padding[0]).view(out_h, 1, 1) + tap_y + offset[..., 0]
    x = (arange(out_w) * stride[1] - padding[1]).view(1, out_w, 1) + tap_x + offset[..., 1]

    y0, x0 = torch.floor(y), torch.floor(x)
    ly, lx = y - y0, x - x0
    y0, x0 = y0.long(), x0.long()
    y_in = (y0 >= 0) & (y0 < height), (y0 >= -1) & (y0 < height - 1)  # top, bottom row inside
    x_in = (x0 >= 0) & (x0 < width), (x0 >= -1) & (x0 < width - 1)  # left, right column inside
    modulation = mask.permute(0, 2, 3, 1)  # [B, Ho, Wo, taps]
    wy = ((1 - ly) * modulation * y_in[0], ly * modulation * y_in[1])
    wx = ((1 - lx) * x_in[0], lx * x_in[1])
    batch_start = (torch.arange(batch, device=offset.device) * (height * width)).view(-1, 1, 1, 1)
    top_left = batch_start + y0 * width + x0
    zero_row = batch * height * width
    index, weights = [], []
    for dy in (0, 1):
        for dx in (0, 1):
            inside = y_in[dy] & x_in[dx]
            index.append(torch.where(inside, top_left + (dy * width + dx), zero_row))
            weights.append(wy[dy] * wx[dx])
    return torch.stack(index, dim=-1).view(-1, 4), torch.stack(weights, dim=-1).view(-1, 4)


class DeformableLayer:
    """A layer that runs :func:`modulated_deform_conv2d`, with the ``implementation`` it passes
    (``"auto"`` unless set, on the class or on one layer); :func:`deform_conv_implementation` finds
    a model's deformable layers by this class."""

    implementation = "auto"


@contextlib.contextmanager
def deform_conv_implementation(model: nn.Module, implementation: str):
    """Inside the block every :class:`DeformableLayer` of ``model`` runs ``implementation`` (one of
    :data:`IMPLEMENTATIONS`); afterwards each has its own again."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown deformable conv implementation {implementation!r}; "
                         f"use one of {', '.join(IMPLEMENTATIONS)}")
    layers = [module for module in model.modules() if isinstance(module, DeformableLayer)]
    own = [layer.__dict__.get("implementation") for layer in layers]  # None: the class's
    for layer in layers:
        layer.implementation = implementation
    try:
        yield
    finally:
        for layer, implementation in zip(layers, own):
            if implementation is None:
                del layer.implementation
            else:
                layer.implementation = implementation


class DeformConv2d(DeformableLayer, nn.Module):
    """Modulated deformable 3x3 (or k x k) convolution with its own offset/mask predictor.

    Args:
        in_channels, out_channels: channels of the input and the output.
        kernel_size: side of the square kernel (one deformable group).
        stride, dilation, groups: as for ``nn.Conv2d``.
        padding: padding of the deformable conv; ``None`` gives Paddle's
            ``(kernel_size - 1) // 2 * dilation`` (the offset conv always uses ``(k - 1) // 2``).
        bias: whether the deformable conv has a bias (Paddle's ConvNormLayer always gives it one).

    Attribute ``implementation`` picks the kernel (see :func:`modulated_deform_conv2d`); the
    default ``"auto"`` uses the gather path on CPU and torchvision's op elsewhere.
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
                                       padding=self.padding, dilation=self.dilation,
                                       implementation=self.implementation)

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
        self.register_parameter("bias", nn.Parameter(torch.zeros(out_channels)) if bias else None)
        # Paddle's default conv init: normal with std sqrt(2 / fan_in); owners may re-initialise.
        fan_in = in_channels // groups * kernel_size * kernel_size
        nn.init.normal_(self.weight, std=math.sqrt(2.0 / fan_in))

    def extra_repr(self):
        out_channels, in_per_group, k, _ = self.weight.shape
        return f"weight=[{out_channels}, {in_per_group}, {k}, {k}], bias={self.bias is not None}"
