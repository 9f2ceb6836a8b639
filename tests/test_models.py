"""The DLA-34 CenterNet and the shared neck: structure as PaddleDetection builds it, output shapes,
initialisation and the registry."""

import math

import pytest
import torch

from centernet import create_model
from centernet.models import CenterNet, list_models, register_model
from centernet.models.head import CenterNetHead
from centernet.models.necks import CenterNetDLAFPN

# Counts measured by building paddledet 2.6.0's CenterNet (DLA depth 34, CenterNetDLAFPN defaults,
# CenterNetHead 80 classes, head_planes 256, regress_ltrb False) with paddlepaddle 3.3.1: the
# models benchmarks/paddle_reference.py builds (`make test-paddle` compares them with ours).
# Paddle's parameters() includes the BatchNorm running mean and variance; PyTorch keeps those
# as buffers, so trainable counts exclude them and the per-part counts add them back.
DLA34_TRAINABLE = 19_675_892
DLA34_PADDLE_BACKBONE = 15_287_088
DLA34_PADDLE_NECK = 3_943_664
DLA34_PADDLE_HEAD = 464_724


def paddle_count(module):
    """Parameters plus BatchNorm running statistics, as Paddle's ``parameters()`` counts them."""
    stats = sum(b.numel() for name, b in module.named_buffers()
                if name.endswith(("running_mean", "running_var")))
    return sum(p.numel() for p in module.parameters()) + stats


@pytest.fixture(scope="module")
def dla34():
    torch.manual_seed(0)
    return create_model("centernet_dla34").eval()


def test_dla34_parameter_counts_equal_paddle(dla34):
    assert sum(p.numel() for p in dla34.parameters()) == DLA34_TRAINABLE
    assert paddle_count(dla34.backbone) == DLA34_PADDLE_BACKBONE
    assert paddle_count(dla34.neck) == DLA34_PADDLE_NECK
    assert paddle_count(dla34.head) == DLA34_PADDLE_HEAD


def test_dla34_state_dict_names_follow_paddle(dla34):
    keys = dla34.state_dict().keys()
    for name in [
        "backbone.base_layer.0.conv.weight",
        "backbone.level5.root.conv.norm.running_var",
        "backbone.level3.tree2.root.conv.conv.weight",
        "neck.dla_up.ida_0.proj_1.0.conv.conv_offset.weight",
        "neck.dla_up.ida_2.up_3.weight",
        "neck.ida_up.node_2.0.conv.conv_dcn.bias",
        "head.heatmap.2.conv.bias",
        "head.size.0.conv.weight",
        "head.offset.2.conv.weight",
    ]:
        assert name in keys
    assert sum(".conv_offset.weight" in k for k in keys) == 16  # all 16 DCNs are in the neck


def test_dla34_output_shapes_512(dla34):
    assert dla34.num_classes == 80 and dla34.stride == 4
    with torch.no_grad():
        out = dla34(torch.randn(1, 3, 512, 512))
    assert set(out) == {"heatmap", "wh", "offset"}
    assert out["heatmap"].shape == (1, 80, 128, 128)
    assert out["wh"].shape == (1, 2, 128, 128)
    assert out["offset"].shape == (1, 2, 128, 128)


def test_dla34_non_square_batch_and_initial_heatmap():
    torch.manual_seed(0)
    model = create_model("centernet_dla34", num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 96, 160))
    assert out["heatmap"].shape == (2, 3, 24, 40)
    assert out["wh"].shape == (2, 2, 24, 40) and out["offset"].shape == (2, 2, 24, 40)
    # logits, not probabilities: the prior bias dominates at init, giving p ~ sigmoid(-2.19) ~ 0.1
    heatmap = out["heatmap"]
    assert heatmap.max() < 0 and abs(heatmap.mean().item() + 2.19) < 0.5


def test_heatmap_bias_is_prior_and_other_biases_zero(dla34):
    assert torch.all(dla34.head.heatmap[2].conv.bias == torch.tensor(-2.19))
    assert math.isclose(1 / (1 + math.exp(2.19)), 0.1, abs_tol=1e-3)
    for branch in (dla34.head.size, dla34.head.offset):
        assert not branch[2].conv.bias.any()


def test_neck_upsampling_starts_bilinear(dla34):
    """The grouped transposed conv at init equals bilinear x2 interpolation inside the map."""
    up = dla34.neck.ida_up.up_1  # x2, 64 channels
    x = torch.randn(1, 64, 8, 8)
    with torch.no_grad():
        ours = up(x)
    reference = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear",
                                                align_corners=False)
    assert ours.shape == (1, 64, 16, 16)
    torch.testing.assert_close(ours[..., 1:-1, 1:-1], reference[..., 1:-1, 1:-1])


def test_backbone_levels_channels_and_strides(dla34):
    features = dla34.backbone(torch.randn(1, 3, 64, 96))
    assert dla34.backbone.out_channels == [16, 32, 64, 128, 256, 512]
    assert dla34.backbone.strides == [1, 2, 4, 8, 16, 32]
    for feature, channels, stride in zip(features, dla34.backbone.out_channels,
                                         dla34.backbone.strides):
        assert feature.shape == (1, channels, 64 // stride, 96 // stride)


# Neck-only counts (with BN running stats) of the other zoo rows from the same Paddle build; the
# backbone channels are those rows' feature maps.
@pytest.mark.parametrize("in_channels, neck_args, paddle_neck, paddle_head", [
    ([256, 512, 1024, 2048], dict(first_level=0, last_level=4, dcn_v2=False), 57_962_496,
     1_791_828),  # centernet_r50
    ([24, 48, 96], dict(first_level=0, last_level=3, down_ratio=8, dcn_v2=False), 139_392,
     188_244),  # centernet_mbv3_small
    ([116, 232, 464], dict(first_level=0, last_level=3, down_ratio=8, dcn_v2=False), 3_170_976,
     824_148),  # centernet_shufflenetv2, older config
])
def test_neck_and_head_counts_of_other_rows(in_channels, neck_args, paddle_neck, paddle_head):
    neck = CenterNetDLAFPN(in_channels, **neck_args)
    assert paddle_count(neck) == paddle_neck
    assert paddle_count(CenterNetHead(neck.out_channels)) == paddle_head


@pytest.mark.parametrize("strides, neck_args", [
    ([4, 8, 16, 32], dict(first_level=0, last_level=4, dcn_v2=False)),
    ([8, 16, 32], dict(first_level=0, last_level=3, down_ratio=8, dcn_v2=False)),
    ([8, 16, 32], dict(first_level=0, last_level=3, down_ratio=8, dcn_v2=True)),
])
def test_neck_output_is_stride_4(strides, neck_args):
    channels = [8 * (i + 1) for i in range(len(strides))]
    neck = CenterNetDLAFPN(channels, **neck_args).eval()
    features = [torch.randn(2, c, 128 // s, 64 // s) for c, s in zip(channels, strides)]
    with torch.no_grad():
        out = neck(features)
    assert neck.out_channels == channels[0]
    assert out.shape == (2, channels[0], 32, 16)


def test_neck_rejects_bad_levels():
    with pytest.raises(ValueError, match="last_level"):
        CenterNetDLAFPN([16, 32, 64], first_level=0, last_level=5)
    with pytest.raises(ValueError, match="first_level"):
        CenterNetDLAFPN([16, 32, 64], first_level=3, last_level=3)


def test_model_rejects_bad_input(dla34):
    with pytest.raises(ValueError, match="multiples of 32"):
        dla34(torch.randn(1, 3, 100, 128))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        dla34(torch.randn(3, 64, 64))


def test_registry():
    assert "centernet_dla34" in list_models()
    assert isinstance(create_model("centernet_dla34", num_classes=5), CenterNet)
    with pytest.raises(ValueError, match="centernet_dla34") as error:
        create_model("centernet_dla35")
    assert "unknown model 'centernet_dla35'" in str(error.value)


def test_register_model_refuses_a_second_builder_under_the_same_name():
    def centernet_dla34(num_classes=80):
        raise AssertionError("must not be registered")

    with pytest.raises(ValueError, match="already registered"):
        register_model(centernet_dla34)
