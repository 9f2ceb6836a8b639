"""DeformConv2d against plain convolution and an independent per-pixel bilinear-sampling reference."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import centernet.models.deform_conv as deform_conv
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


@pytest.mark.parametrize("implementation", ["torchvision", "gather"])
@pytest.mark.parametrize("stride", [1, 2])
def test_random_offsets_match_loop_reference(stride, implementation):
    """Offsets up to +-4 pixels on a 7x8 map: many taps land partly or wholly outside the image."""
    generator = torch.Generator().manual_seed(2 + stride)
    out_h, out_w = (7 - 1) // stride + 1, (8 - 1) // stride + 1
    x = torch.randn(2, 3, 7, 8, generator=generator)
    offset = torch.rand(2, 18, out_h, out_w, generator=generator) * 8 - 4
    mask = torch.rand(2, 9, out_h, out_w, generator=generator)
    weight = torch.randn(4, 3, 3, 3, generator=generator)
    bias = torch.randn(4, generator=generator)
    got = modulated_deform_conv2d(x, offset, mask, weight, bias, stride=stride, padding=1,
                                  implementation=implementation)
    expected = reference_dcn(x, offset, mask, weight, bias, stride=stride, padding=1)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_parameter_names_and_shapes_follow_paddle():
    layer = DeformConv2d(16, 8, 3)
    shapes = {name: tuple(p.shape) for name, p in layer.state_dict().items()}
    assert shapes == {"conv_offset.weight": (27, 16, 3, 3), "conv_offset.bias": (27,),
                      "conv_dcn.weight": (8, 16, 3, 3), "conv_dcn.bias": (8,)}
    assert not layer.conv_offset.weight.any() and not layer.conv_offset.bias.any()


def _inputs(dtype, stride, padding, dilation, batch=2, channels=5, size=(9, 8), out_channels=4):
    """Random inputs whose offsets (+-5 px) send many taps partly or wholly out of the image."""
    generator = torch.Generator().manual_seed(7)
    height, width = size
    out_h = (height + 2 * padding - 2 * dilation - 1) // stride + 1
    out_w = (width + 2 * padding - 2 * dilation - 1) // stride + 1

    def rand(*shape, scale=1.0, shift=0.0):
        return (torch.rand(*shape, generator=generator, dtype=dtype) * scale + shift)

    return [rand(batch, channels, height, width, scale=2, shift=-1),
            rand(batch, 18, out_h, out_w, scale=10, shift=-5),
            rand(batch, 9, out_h, out_w),
            rand(out_channels, channels, 3, 3, scale=2, shift=-1),
            rand(out_channels, scale=2, shift=-1)]


def _forward_backward(inputs, implementation, stride, padding, dilation):
    inputs = [t.clone().requires_grad_() for t in inputs]
    out = modulated_deform_conv2d(*inputs, stride=stride, padding=padding, dilation=dilation,
                                  implementation=implementation)
    upstream = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    return [out] + list(torch.autograd.grad(out, inputs, upstream))


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("stride, padding, dilation", [(1, 1, 1), (2, 1, 1), (1, 2, 2), (1, 0, 1)])
def test_gather_path_equals_torchvision_forward_and_backward(dtype, tolerance, stride, padding,
                                                             dilation):
    inputs = _inputs(dtype, stride, padding, dilation)
    reference = _forward_backward(inputs, "torchvision", stride, padding, dilation)
    ours = _forward_backward(inputs, "gather", stride, padding, dilation)
    names = ["output", "grad x", "grad offset", "grad mask", "grad weight", "grad bias"]
    for name, a, b in zip(names, ours, reference):
        scale = max(1.0, b.abs().max().item())
        assert (a - b).abs().max().item() <= tolerance * scale, name


def test_gather_path_without_bias_and_with_offsets_far_outside():
    inputs = _inputs(torch.float64, 1, 1, 1)
    inputs[1][:, :, 0, 0] = 1e6  # every tap of one pixel samples far outside: contributes nothing
    inputs[4] = None
    expected = modulated_deform_conv2d(*inputs, padding=1, implementation="torchvision")
    got = modulated_deform_conv2d(*inputs, padding=1, implementation="gather")
    torch.testing.assert_close(got, expected)
    assert not got[:, :, 0, 0].any()


def test_auto_uses_the_gather_path_on_cpu_and_torchvision_for_groups(monkeypatch):
    calls = []
    original = deform_conv.gather_deform_conv2d
    monkeypatch.setattr(deform_conv, "gather_deform_conv2d",
                        lambda *args: calls.append(1) or original(*args))
    layer = DeformConv2d(4, 6, 3)
    layer(torch.randn(1, 4, 6, 6))
    assert calls == [1]
    grouped = DeformConv2d(4, 6, 3, groups=2)
    assert grouped(torch.randn(1, 4, 6, 6)).shape == (1, 6, 6, 6)
    assert calls == [1]
    with pytest.raises(ValueError, match="implementation"):
        modulated_deform_conv2d(*_inputs(torch.float32, 1, 1, 1), implementation="cuda")


@pytest.mark.parametrize("with_bias", [True, False])
def test_gather_path_inference_blocks_cover_every_pixel(monkeypatch, with_bias):
    """Without autograd the gather path works in blocks of output pixels; 7 does not divide 2x9x8."""
    monkeypatch.setattr(deform_conv, "INFERENCE_BLOCK_PIXELS", 7)
    inputs = _inputs(torch.float64, 1, 1, 1)
    if not with_bias:
        inputs[4] = None
    expected = modulated_deform_conv2d(*inputs, padding=1, implementation="torchvision")
    with torch.no_grad():
        got = modulated_deform_conv2d(*inputs, padding=1, implementation="gather")
    torch.testing.assert_close(got, expected)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_onnx_export_with_dynamic_shapes_matches_pytorch(tmp_path):
    """torchvision's op has no ONNX form; during export the layer takes the gather path."""
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    layer = DeformConv2d(8, 4, 3, stride=2).eval()
    torch.nn.init.normal_(layer.conv_offset.weight, std=0.3)  # offsets of about a pixel
    path = tmp_path / "dcn.onnx"
    torch.onnx.export(layer, (torch.randn(2, 8, 12, 10),), str(path), dynamo=False,
                      opset_version=17, input_names=["x"],
                      dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}})
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 8, 17, 23)  # another batch size and an odd size
    got = session.run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        expected = layer(x).numpy()
    assert got.shape == (1, 4, 9, 12)
    np.testing.assert_allclose(got, expected, atol=1e-5)
