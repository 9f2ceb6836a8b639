"""The model zoo: one builder per PaddleDetection CenterNet config (80 COCO classes by default).

Each builder wires backbone, neck and head with the arguments of the matching
``configs/centernet/*.yml`` in PaddleDetection, so published ``.pdparams`` weights load 1:1.
"""

from .backbones.dla import dla34
from .backbones.mobilenet import MobileNetV1, MobileNetV3
from .backbones.resnet import ResNet
from .backbones.shufflenet import ShuffleNetV2
from .centernet import CenterNet
from .head import CenterNetHead
from .necks import CenterNetDLAFPN
from .registry import register_model


def _centernet(backbone, num_classes, head_planes=256, **neck_args):
    neck = CenterNetDLAFPN(backbone.out_channels, **neck_args)
    head = CenterNetHead(neck.out_channels, num_classes=num_classes, head_planes=head_planes)
    return CenterNet(backbone, neck, head)


@register_model
def centernet_dla34(num_classes=80, head_planes=256):
    """centernet_dla34_140e_coco: DLA-34, DLAUp/IDAUp neck with DCNv2, stride 4 (37.6 mAP)."""
    return _centernet(dla34(), num_classes, head_planes)


# The lighter rows share the R50 base config's neck: levels 0..3 fused to stride 4, no DCN.
_R50_NECK = dict(first_level=0, last_level=4, down_ratio=4, dcn_v2=False)
# Three-level rows start at stride 8; the neck up-samples its output x2 to stride 4.
_STRIDE8_NECK = dict(first_level=0, last_level=3, down_ratio=8, dcn_v2=False)


@register_model
def centernet_r50(num_classes=80, head_planes=256):
    """centernet_r50_140e_coco: ResNet50-vd with DCNv2 in the last stage, BatchNorm affine frozen
    (Paddle's freeze_norm), DLAUp/IDAUp neck without DCN (38.9 mAP)."""
    backbone = ResNet(depth=50, return_idx=(0, 1, 2, 3), dcn_v2_stages=(3,), freeze_norm=True)
    return _centernet(backbone, num_classes, head_planes, **_R50_NECK)


@register_model
def centernet_mbv1(num_classes=80, head_planes=256):
    """centernet_mbv1_140e_coco: MobileNetV1 x1.0, feature maps [3, 5, 11, 13] (28.2 mAP)."""
    backbone = MobileNetV1(scale=1.0, feature_maps=(3, 5, 11, 13))
    return _centernet(backbone, num_classes, head_planes, **_R50_NECK)


@register_model
def centernet_mbv3_small(num_classes=80, head_planes=256):
    """centernet_mbv3_small_140e_coco: MobileNetV3-small x1.0, feature maps [4, 9, 12] at
    strides 8..32 (17.0 mAP)."""
    backbone = MobileNetV3(model_name="small", scale=1.0, feature_maps=(4, 9, 12))
    return _centernet(backbone, num_classes, head_planes, **_STRIDE8_NECK)


@register_model
def centernet_mbv3_large(num_classes=80, head_planes=256):
    """centernet_mbv3_large_140e_coco: MobileNetV3-large x1.0, feature maps [4, 7, 13, 16]
    (27.1 mAP)."""
    backbone = MobileNetV3(model_name="large", scale=1.0, feature_maps=(4, 7, 13, 16))
    return _centernet(backbone, num_classes, head_planes, **_R50_NECK)


@register_model
def centernet_shufflenetv2(num_classes=80, head_planes=256):
    """centernet_shufflenetv2_140e_coco: ShuffleNetV2 x1.0 with leaky ReLU, feature maps
    [5, 13, 17] at strides 8..32 (23.8 mAP; see docs/models.md for the stem-returning variant)."""
    backbone = ShuffleNetV2(scale=1.0, act="leaky_relu", feature_maps=(5, 13, 17))
    return _centernet(backbone, num_classes, head_planes, **_STRIDE8_NECK)
