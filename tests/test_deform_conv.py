"""DeformConv2d against plain convolution and an independent per-pixel bilinear-sampling reference."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from centernet.models.deform_conv import DeformConv2d, modulated_deform_conv2d


def reference_dcn(x, offset, mask, weight, bias, stride, padding, dilation=1):
    """Modulated deformable conv written out with loops (float64 numpy).

    Tap t = i * k + j of output pixel (oy, ox) samples the input at
    (oy * stride - padding + i * dilation + offset[2t], ox * stride - padding + j * dilation +
    offset[2t + 1]) by bilinear interpolation with zeros outside the image, times mask[t].
    """
    x, offset, mask, weight = (np.asarray(a, dtype=np.float64) for a in (x, offset, mask, weight))
    batch, channels, height, width = x.shape
    out_channels, _, k, _ = weight.shape
    out_h, out_w = offset.shape[-2:]

    def pixel(b, c, y, x_):
        return x[b, c, y, x_] if 0 <= y < height and 0 <= x_ < width else 0.0

    def bilinear(b, c, y, x_):
        y0, x0 = int(np.floor(y)), int(np.floor(x_))
        ly, lx = y - y0, x_ - x0
        return ((1 - ly) * (1 - lx) * pixel(b, c, y0, x0) + (1 - ly) * lx * pixel(b, c, y0, x0 + 1)
                + ly * (1 - lx) * pixel(b, c, y0 + 1, x0) + ly * lx * pixel(b, c, y0 + 1, x0 + 1))

    out = np.zeros((batch, out_channels, out_h, out_w))
    for b in range(batch):
        for oy in range(out_h):
            for ox in range(out_w):
                columns = np.zeros((channels, k, k))
                for i in range(k):
                    for j in range(k):
                        t = i * k + j
                        y = oy * stride - padding + i * dilation + offset[b, 2 * t, oy, ox]
                        x_ = ox * stride - padding + j * dilation + offset[b, 2 * t + 1, oy, ox]
                        for c in range(channels):
                            columns[c, i, j] = bilinear(b, c, y, x_) * mask[b, t, oy, ox]
                out[b, :, oy, ox] = np.tensordot(weight, columns, axes=3)
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64)[None, :, None, None]
    return out


def test_zero_offsets_and_unit_mask_equal_conv2d():
    torch.manual_seed(0)
    layer = DeformConv2d(5, 7, 3)
    with torch.no_grad():
        layer.conv_offset.bias[18:] = 50.0  # sigmoid(50) == 1: mask of ones; offsets stay 0
        layer.conv_dcn.bias.normal_()
    x = torch.randn(2, 5, 9, 11)
    expected = F.conv2d(x, layer.conv_dcn.weight, layer.conv_dcn.bias, padding=1)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_new_layer_starts_with_zero_offsets_and_half_mask():
    layer = DeformConv2d(4, 6, 3)
    x = torch.randn(1, 4, 8, 8)
    expected = F.conv2d(x, layer.conv_dcn.weight, layer.conv_dcn.bias, padding=1) * 0.5
    # bias is zero at init, so halving the whole output equals halving every sampled value
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_channel_layout_is_offsets_then_mask_with_y_before_x():
    """Offsets are conv_offset channels [0, 2k^2) as (y, x) per tap, mask logits [2k^2, 3k^2)."""
    torch.manual_seed(1)
    layer = DeformConv2d(3, 4, 3)
    offset_values = torch.randn(18) * 1.5
    mask_logits = torch.randn(9)
    with torch.no_grad():
        layer.conv_offset.bias.copy_(torch.cat([offset_values, mask_logits]))
        layer.conv_dcn.bias.normal_()
    x = torch.randn(1, 3, 6, 5)
    offset = offset_values.view(1, 18, 1, 1).expand(1, 18, 6, 5)
    mask = torch.sigmoid(mask_logits).view(1, 9, 1, 1).expand(1, 9, 6, 5)
    expected = reference_dcn(x, offset, mask, layer.conv_dcn.weight.detach(),
                             layer.conv_dcn.bias.detach(), stride=1, padding=1)
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_random_offsets_match_loop_reference(stride):
    """Offsets up to +-4 pixels on a 7x8 map: many taps land partly or wholly outside the image."""
    generator = torch.Generator().manual_seed(2 + stride)
    out_h, out_w = (7 - 1) // stride + 1, (8 - 1) // stride + 1
    x = torch.randn(2, 3, 7, 8, generator=generator)
    offset = torch.rand(2, 18, out_h, out_w, generator=generator) * 8 - 4
    mask = torch.rand(2, 9, out_h, out_w, generator=generator)
    weight = torch.randn(4, 3, 3, 3, generator=generator)
    bias = torch.randn(4, generator=generator)
    got = modulated_deform_conv2d(x, offset, mask, weight, bias, stride=stride, padding=1)
    expected = reference_dcn(x, offset, mask, weight, bias, stride=stride, padding=1)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_parameter_names_and_shapes_follow_paddle():
    layer = DeformConv2d(16, 8, 3)
    shapes = {name: tuple(p.shape) for name, p in layer.state_dict().items()}
    assert shapes == {"conv_offset.weight": (27, 16, 3, 3), "conv_offset.bias": (27,),
                      "conv_dcn.weight": (8, 16, 3, 3), "conv_dcn.bias": (8,)}
    assert not layer.conv_offset.weight.any() and not layer.conv_offset.bias.any()
