"""PaddleDetection reference models: build, dump their keys, make reference outputs.

Runs only inside the reference venv made by ``scripts/setup_paddle_env.sh``
(``.venv-paddle/bin/python benchmarks/paddle_reference.py ...``); it imports paddle and ppdet,
never torch. Every zoo row is built from paddledet 2.6.0's own classes with the arguments of its
config (80 classes), so the key names, shapes and outputs are PaddleDetection's.

Commands:
  keys [MODEL ...] [--out DIR]      write `name shape` per state-dict key to DIR/<model>.txt and
                                    print parameter counts checked against the reference table
  reference MODEL --out DIR         random but non-trivial weights -> DIR/<model>.pdparams, and the
                                    raw head outputs for fixed inputs -> DIR/<model>.npz
"""

import argparse
import os
import sys

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")
import paddle  # noqa: E402
from ppdet.modeling.backbones.dla import DLA  # noqa: E402
from ppdet.modeling.backbones.mobilenet_v1 import MobileNet  # noqa: E402
from ppdet.modeling.backbones.mobilenet_v3 import MobileNetV3  # noqa: E402
from ppdet.modeling.backbones.resnet import ResNet  # noqa: E402
from ppdet.modeling.backbones.shufflenet_v2 import ShuffleNetV2  # noqa: E402
from ppdet.modeling.heads.centernet_head import CenterNetHead  # noqa: E402
from ppdet.modeling.necks.centernet_fpn import CenterNetDLAFPN  # noqa: E402

NUM_CLASSES = 80

# The neck arguments of the r50 base config, inherited by mbv1, mbv3_large and shufflenetv2.
R50_NECK = dict(first_level=0, last_level=4, down_ratio=4, dcn_v2=False)
# The down-ratio-8 neck of mbv3_small and of the older shufflenetv2 config.
STRIDE8_NECK = dict(first_level=0, last_level=3, down_ratio=8, dcn_v2=False)

# name -> (backbone builder, neck kwargs). The r50 configs ask for sync_bn; on one CPU device
# plain BN has the same parameters and the same eval-mode arithmetic.
ZOO = {
    "centernet_dla34": (lambda: DLA(depth=34), {"down_ratio": 4}),
    "centernet_r50": (
        lambda: ResNet(depth=50, variant="d", return_idx=[0, 1, 2, 3], dcn_v2_stages=[3],
                       freeze_at=-1, norm_decay=0.0),
        R50_NECK),
    "centernet_mbv1": (
        lambda: MobileNet(scale=1.0, with_extra_blocks=False, extra_block_filters=[],
                          feature_maps=[3, 5, 11, 13]),
        R50_NECK),
    "centernet_mbv3_small": (
        lambda: MobileNetV3(model_name="small", scale=1.0, with_extra_blocks=False,
                            extra_block_filters=[], feature_maps=[4, 9, 12]),
        STRIDE8_NECK),
    "centernet_mbv3_large": (
        lambda: MobileNetV3(model_name="large", scale=1.0, with_extra_blocks=False,
                            extra_block_filters=[], feature_maps=[4, 7, 13, 16]),
        R50_NECK),
    # The older config that builds in paddledet 2.6.0 (the newest one's [1, 5, 13, 17] does not).
    "centernet_shufflenetv2": (
        lambda: ShuffleNetV2(scale=1.0, act="leaky_relu", feature_maps=[5, 13, 17]),
        STRIDE8_NECK),
}

# Paddle parameters() counts (BN running stats included) from the reference page's table.
EXPECTED_PARAMS = {
    "centernet_dla34": 19_695_476,
    "centernet_r50": 83_708_165,
    "centernet_mbv1": 18_666_516,
    "centernet_mbv3_small": 1_203_858,
    "centernet_mbv3_large": 3_548_650,
    "centernet_shufflenetv2": 4_785_676,
}


class PaddleCenterNet(paddle.nn.Layer):
    """Backbone + CenterNetDLAFPN + CenterNetHead with the sub-layer names of ppdet's CenterNet
    (``backbone.``, ``neck.``, ``head.``), so the state-dict keys are those of its weights files."""

    def __init__(self, name):
        super().__init__()
        build_backbone, neck_kwargs = ZOO[name]
        self.backbone = build_backbone()
        in_channels = [shape.channels for shape in self.backbone.out_shape]
        self.neck = CenterNetDLAFPN(in_channels=in_channels, **neck_kwargs)
        self.head = CenterNetHead(self.neck.out_shape[0].channels, num_classes=NUM_CLASSES,
                                  head_planes=256, regress_ltrb=False)

    def forward(self, images):
        """images [B,3,H,W] -> raw maps: heatmap LOGITS (before ppdet's sigmoid), size, offset."""
        features = self.backbone({"image": images})
        feature = self.neck(features)  # [B, C, H/4, W/4]
        return {
            "heatmap": self.head.heatmap(feature),  # [B, 80, H/4, W/4], pre-sigmoid
            "size": self.head.size(feature),  # [B, 2, H/4, W/4]
            "offset": self.head.offset(feature),  # [B, 2, H/4, W/4]
        }


def build(name, seed=0):
    if name not in ZOO:
        raise SystemExit(f"unknown model {name!r}; known: {', '.join(ZOO)}")
    paddle.seed(seed)
    np.random.seed(seed)
    return PaddleCenterNet(name)


def count(layer):
    return sum(int(np.prod(p.shape)) for p in layer.parameters())


def dump_keys(name, out_dir):
    model = build(name)
    path = os.path.join(out_dir, f"{name}.txt")
    with open(path, "w") as f:
        for key, value in model.state_dict().items():
            shape = ",".join(str(d) for d in value.shape)
            f.write(f"{key} [{shape}]\n")
    total = count(model)
    running = sum(int(np.prod(v.shape)) for k, v in model.state_dict().items()
                  if k.endswith(("_mean", "_variance")))
    expected = EXPECTED_PARAMS[name]
    status = "OK" if total == expected else f"MISMATCH (reference page: {expected:,})"
    print(f"{name}: parameters {total:,} {status}; without BN running stats {total - running:,}; "
          f"backbone {count(model.backbone):,} neck {count(model.neck):,} "
          f"head {count(model.head):,}; keys -> {path}")
    return total == expected


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    keys = sub.add_parser("keys", help="dump state-dict keys and check parameter counts")
    keys.add_argument("models", nargs="*", default=list(ZOO))
    keys.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "scratch",
                                                    "paddle_keys"))
    args = parser.parse_args(argv)

    paddle.set_device("cpu")
    if args.command == "keys":
        os.makedirs(args.out, exist_ok=True)
        ok = [dump_keys(name, args.out) for name in args.models]
        return 0 if all(ok) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
