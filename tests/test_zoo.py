"""The five non-DLA zoo rows (ResNet50-vd, MobileNetV1, MobileNetV3 small/large, ShuffleNetV2).

Reference numbers come from building paddledet 2.6.0's models with the arguments of
PaddleDetection's configs (80 classes; benchmarks/paddle_reference.py builds them, docs/models.md
lists them). Paddle counts BatchNorm running mean and variance as
parameters; PyTorch keeps them as buffers, so the whole-model figure compared with
``model.parameters()`` is Paddle's count without them.
"""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import deform_conv2d

from centernet import create_model, list_models
from centernet.config import load_config
from centernet.losses import CenterNetLoss
from centernet.models.backbones.mobilenet import SEModule
from centernet.models.backbones.resnet import ConvNormLayer as ResNetConvNorm
from centernet.models.backbones.resnet import ResNet
from centernet.models.backbones.shufflenet import ShuffleNetV2, channel_shuffle
from centernet.models.necks import CenterNetDLAFPN
from centernet.targets import build_targets

ROWS = ["centernet_r50", "centernet_mbv1", "centernet_mbv3_small", "centernet_mbv3_large",
        "centernet_shufflenetv2"]

# Paddle parameters() without BN running stats, and (backbone, neck, head) WITH them, as paddledet
# 2.6.0 builds each row (python benchmarks/paddle_reference.py in .venv-paddle).
PADDLE_COUNTS = {
    "centernet_r50": (83_640_581, (23_953_841, 57_962_496, 1_791_828)),
    "centernet_mbv1": (18_637_460, (3_228_864, 14_530_560, 907_092)),
    "centernet_mbv3_small": (1_192_290, (876_222, 139_392, 188_244)),
    "centernet_mbv3_large": (3_524_794, (2_837_398, 523_008, 188_244)),
    "centernet_shufflenetv2": (4_768_760, (790_552, 3_170_976, 824_148)),
}

# sha256 of Paddle's state-dict listing, one "name [shape]" line per entry in state-dict order,
# dumped from paddledet 2.6.0's model (benchmarks/paddle_reference.py; BN stats named _mean and
# _variance). Equal digests mean equal names, shapes and order, so .pdparams load one to one.
PADDLE_KEYS_SHA256 = {
    "centernet_r50": "1eb9176921744f9c6a0c25c362c1048d0aa259138122358487908f072f496c44",
    "centernet_mbv1": "02d3478f266f0ed7ffddefa3bb81c7849f357f08fc1c41d62538c86a14981baa",
    "centernet_mbv3_small": "ef26ef505741dd153f94487f10978765d90dc8d4d9092990278e888990990a56",
    "centernet_mbv3_large": "49e3034d5758ee149c641a505414e0437c0f623f10a8aa566922dbaa2a6c849c",
    "centernet_shufflenetv2": "f8fd33294c16bc73ea560c286aa018c70dbab1ab55a16fabbb24310cf9a687a9",
}

_MODELS = {}


def _model(name):
    """Each 80-class row built once per test session (read-only use)."""
    if name not in _MODELS:
        torch.manual_seed(0)
        _MODELS[name] = create_model(name).eval()
    return _MODELS[name]


def _count_with_running_stats(module):
    stats = sum(b.numel() for n, b in module.named_buffers()
                if n.endswith(("running_mean", "running_var")))
    return sum(p.numel() for p in module.parameters()) + stats


def _paddle_style_listing(model):
    lines = []
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        key = key.replace("running_mean", "_mean").replace("running_var", "_variance")
        lines.append(f"{key} [{','.join(str(d) for d in value.shape)}]\n")
    return "".join(lines)


def test_rows_are_registered():
    assert set(ROWS) <= set(list_models())


@pytest.mark.parametrize("name", ROWS)
def test_config_file_names_the_row_with_paddles_recipe(name):
    path = Path(__file__).resolve().parents[1] / "configs" / f"{name}_140e_coco.yml"
    config = load_config(path)
    assert config.model.name == name and config.model.num_classes == 80
    assert config.data.input_size == (512, 512)
    train = config.train
    assert (train.epochs, train.lr, train.milestones, train.gamma) == (140, 5e-4, (90, 120), 0.1)
    assert (train.ema, train.ema_decay, train.sync_bn) == (True, 0.9998, True)
    assert train.batch_size == (16 if name == "centernet_r50" else 32)


@pytest.mark.parametrize("name", ROWS)
def test_parameter_counts_equal_paddle(name):
    model = _model(name)
    total, parts = PADDLE_COUNTS[name]
    # all nn.Parameters, trained or not (R50's frozen BatchNorm affine included)
    assert sum(p.numel() for p in model.parameters()) == total
    assert tuple(_count_with_running_stats(m) for m in (model.backbone, model.neck, model.head)) \
        == parts


@pytest.mark.parametrize("name", ROWS)
def test_state_dict_names_shapes_and_order_equal_paddle(name):
    listing = _paddle_style_listing(_model(name))
    assert hashlib.sha256(listing.encode()).hexdigest() == PADDLE_KEYS_SHA256[name]


def test_r50_has_dcn_in_last_stage_only():
    state = _model("centernet_r50").state_dict()
    offsets = [k for k in state if "conv_offset" in k]
    assert offsets and all(k.startswith("backbone.res5.") for k in offsets)
    assert state["backbone.res5.res5a.branch2b.conv_offset.weight"].shape == (27, 512, 3, 3)
    assert state["backbone.res5.res5a.branch2b.conv.weight"].shape == (512, 512, 3, 3)


def test_r50_dcn_layer_samples_at_predicted_offsets_with_stride():
    # res5a's 3x3 DCN has stride 2; compare with torchvision's reference op applied by hand
    torch.manual_seed(0)
    layer = ResNetConvNorm(8, 16, 3, stride=2, dcn_v2=True).eval()
    torch.nn.init.normal_(layer.conv_offset.weight, std=0.3)
    x = torch.randn(2, 8, 9, 11)
    offset, mask_logits = layer.conv_offset(x).split([18, 9], dim=1)
    expected = deform_conv2d(x, offset, layer.conv.weight, stride=2, padding=1,
                             mask=mask_logits.sigmoid())
    with torch.no_grad():
        assert torch.allclose(layer(x), layer.norm(expected), atol=1e-4)
    assert offset.abs().max() > 1  # the test really samples away from the grid


def test_r50_batchnorm_affine_frozen_but_statistics_update():
    model = _model("centernet_r50")
    frozen = [p for p in model.parameters() if not p.requires_grad]
    # Paddle's freeze_norm: every backbone BatchNorm scale and bias, 53,248 values in all
    assert sum(p.numel() for p in frozen) == 53_248
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(not m.weight.requires_grad and not m.bias.requires_grad for m in norms)
    backbone = ResNet(depth=50, dcn_v2_stages=(3,)).train()
    stem_norm = backbone.conv1.conv1_1.norm
    mean_before, weight_before = stem_norm.running_mean.clone(), stem_norm.weight.clone()
    sum(m.sum() for m in backbone(torch.randn(2, 3, 64, 64))).backward()
    assert stem_norm.weight.grad is None and torch.equal(stem_norm.weight, weight_before)
    assert not torch.equal(stem_norm.running_mean, mean_before)


@pytest.mark.parametrize("name", ROWS)
def test_output_shapes_at_512(name):
    with torch.no_grad():
        outputs = _model(name)(torch.randn(1, 3, 512, 512))
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        "heatmap": (1, 80, 128, 128), "wh": (1, 2, 128, 128), "offset": (1, 2, 128, 128)}


def test_stride8_rows_start_the_neck_at_stride_8():
    for name in ("centernet_mbv3_small", "centernet_shufflenetv2"):
        model = _model(name)
        assert model.backbone.strides == [8, 16, 32]
        assert model.neck.down_ratio == 8


def test_shufflenet_stem_variant_matches_paddle_prerelease_config():
    # PaddleDetection's pre-release config (feature_maps [1, 5, 13, 17], neck levels 0..4, stride
    # 4) returned the stem; built in Paddle it has 3,445,272 parameters without BN statistics.
    backbone = ShuffleNetV2(scale=1.0, act="leaky_relu", feature_maps=(1, 5, 13, 17))
    assert backbone.out_channels == [24, 116, 232, 464] and backbone.strides == [4, 8, 16, 32]
    neck = CenterNetDLAFPN(backbone.out_channels, first_level=0, last_level=4, down_ratio=4,
                           dcn_v2=False)
    head_params = 188_244  # Paddle's head on 24 channels
    total = sum(p.numel() for m in (backbone, neck) for p in m.parameters()) + head_params
    assert total == 3_445_272
    maps = backbone(torch.randn(1, 3, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [(24, 16, 16), (116, 8, 8), (232, 4, 4),
                                                  (464, 2, 2)]


def test_channel_shuffle_interleaves_the_two_halves():
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_mobilenetv3_se_uses_paddle_hard_sigmoid():
    se = SEModule(8)
    torch.nn.init.zeros_(se.conv2.weight)
    torch.nn.init.constant_(se.conv2.bias, 1.0)
    out = se(torch.ones(1, 8, 2, 2))
    # Paddle: clip(0.2 * 1 + 0.5, 0, 1) = 0.7 (PyTorch's hardsigmoid would give 1/6 + 0.5)
    assert torch.allclose(out, torch.full_like(out, 0.7))


def _synthetic_batch(num_classes, size=64, seed=0):
    """Two random images with two boxes each, and their targets from build_targets."""
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.standard_normal((2, 3, size, size)).astype(np.float32))
    per_image = []
    for _ in range(2):
        corners = rng.uniform(0, size / 2, (2, 2))
        sizes = rng.uniform(size / 6, size / 2, (2, 2))
        boxes = np.concatenate([corners, corners + sizes], axis=1)
        per_image.append(build_targets(boxes, rng.integers(0, num_classes, 2), num_classes,
                                       (size // 4, size // 4)))
    targets = {k: torch.from_numpy(np.stack([t[k] for t in per_image])) for k in per_image[0]}
    return images, targets


# R50's step is bound by its 84M parameters (~2.5 s of CPU each), so its run is marked slow; the
# default run still back-propagates through its DCN stage in the frozen-BatchNorm test above.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "centernet_r50"
                                  else n for n in ROWS])
def test_a_few_training_steps_reduce_the_loss(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3).train()
    images, targets = _synthetic_batch(num_classes=3)
    criterion = CenterNetLoss()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    losses = []
    for _ in range(6):
        loss = criterion(model(images), targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.75 * losses[0], losses
