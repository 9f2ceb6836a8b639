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
  backbone MODEL --out DIR          an ImageNet-style backbone file -> DIR/<model>_imagenet.pdparams,
                                    loaded by ppdet's load_pretrain_weight into a fresh model: the keys
                                    it set and the backbone's float64 features -> DIR/<model>_backbone.npz
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
from ppdet.modeling.post_process import CenterNetPostProcess  # noqa: E402
import paddle.nn.functional as F  # noqa: E402

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

    def __init__(self, name, num_classes=NUM_CLASSES, head_planes=256):
        super().__init__()
        build_backbone, neck_kwargs = ZOO[name]
        self.backbone = build_backbone()
        in_channels = [shape.channels for shape in self.backbone.out_shape]
        self.neck = CenterNetDLAFPN(in_channels=in_channels, **neck_kwargs)
        self.head = CenterNetHead(self.neck.out_shape[0].channels, num_classes=num_classes,
                                  head_planes=head_planes, regress_ltrb=False)

    def forward(self, images):
        """images [B,3,H,W] -> raw maps: heatmap LOGITS (before ppdet's sigmoid), size, offset."""
        features = self.backbone({"image": images})
        feature = self.neck(features)  # [B, C, H/4, W/4]
        return {
            "heatmap": self.head.heatmap(feature),  # [B, 80, H/4, W/4], pre-sigmoid
            "size": self.head.size(feature),  # [B, 2, H/4, W/4]
            "offset": self.head.offset(feature),  # [B, 2, H/4, W/4]
        }


def build(name, seed=0, num_classes=NUM_CLASSES, head_planes=256):
    if name not in ZOO:
        raise SystemExit(f"unknown model {name!r}; known: {', '.join(ZOO)}")
    paddle.seed(seed)
    np.random.seed(seed)
    return PaddleCenterNet(name, num_classes, head_planes)


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


def randomize(model, images, seed=0):
    """Give every parameter a role in the output, so a wrongly mapped weight shows in the maps.

    Paddle initialises DCN offset convs and most biases to zero and the up-sampling deconvs to
    symmetric bilinear kernels, which would hide mistakes in how we lay those out; BN layers start
    at identity. Here: offset convs get weights that move the sampling points by about a pixel,
    biases and deconvs get noise, BN gamma/beta are random, and each BN's running statistics are set
    from the statistics its input really has on `images` (perturbed), so activations stay O(1)
    through the whole depth while mean and variance are far from 0 and 1.
    """
    rng = np.random.default_rng(seed)

    def assign(param, values):
        param.set_value(values.astype(param.numpy().dtype))

    norms = [layer for layer in model.sublayers() if isinstance(layer, paddle.nn.layer.norm._BatchNormBase)]
    norm_params = {id(p) for layer in norms for p in layer.parameters()}
    for name, param in model.named_parameters():
        if id(param) in norm_params:
            continue
        shape = param.shape
        if "conv_offset" in name:  # [27, C, 3, 3] and [27]: offsets about +-1 px, masks spread
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            assign(param, rng.normal(0.0, 1.0 / np.sqrt(fan_in) if len(shape) > 1 else 0.5, shape))
        elif name.endswith("bias"):
            assign(param, param.numpy() + rng.normal(0.0, 0.1, shape))
        elif ".up_" in name:  # bilinear deconv kernels [C, 1, k, k] made asymmetric
            assign(param, param.numpy() + rng.normal(0.0, 0.1, shape))
        elif name in ("head.heatmap.2.conv.weight", "head.size.2.conv.weight"):
            assign(param, param.numpy() * 8.0)  # spread scores and box sizes
    for layer in norms:
        channels = layer.weight.shape[0]
        assign(layer.weight, rng.uniform(0.5, 1.5, channels))
        assign(layer.bias, rng.normal(0.0, 0.2, channels))

    def set_stats(layer, inputs):
        feature = inputs[0].numpy()  # [B, C, H, W]
        mean = feature.mean(axis=(0, 2, 3))
        var = feature.var(axis=(0, 2, 3))
        channels = mean.shape[0]
        assign(layer._mean, mean + 0.2 * np.sqrt(var) * rng.normal(0.0, 1.0, channels))
        assign(layer._variance, var * rng.uniform(0.5, 2.0, channels) + 1e-3)

    hooks = [layer.register_forward_pre_hook(set_stats) for layer in norms]
    model.eval()
    with paddle.no_grad():
        model(paddle.to_tensor(images))
    for hook in hooks:
        hook.remove()


def fixed_images(shape, seed):
    """A smooth random image batch (normalised-pixel scale), the same on every machine."""
    batch, height, width = shape
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0.0, 1.0, (batch, 3, height // 8 + 1, width // 8 + 1))
    images = np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3)[:, :, :height, :width]
    return (images + 0.3 * rng.normal(0.0, 1.0, images.shape)).astype("float32")


def paddle_detections(heatmap_logits, size, offset, image_hw):
    """ppdet's CenterNetPostProcess (max_per_img 100, wh), boxes in input-image pixels.

    Returns [B, 100, 6] rows (class, score, x1, y1, x2, y2); ppdet decodes one image at a time,
    in float32 (its class column is float32), so float64 maps are rounded to float32 after the
    sigmoid."""
    post = CenterNetPostProcess(max_per_img=100, down_ratio=4, regress_ltrb=False)
    im_shape = paddle.to_tensor([list(image_hw)], dtype="float32")
    scale_factor = paddle.ones([1, 2], dtype="float32")
    rows = []
    for i in range(heatmap_logits.shape[0]):
        maps = [F.sigmoid(heatmap_logits[i:i + 1]), size[i:i + 1], offset[i:i + 1]]
        results = post(*[m.astype("float32") for m in maps], im_shape, scale_factor)[0]
        rows.append(results.numpy())
    return np.stack(rows)


def make_reference(name, out_dir, sizes, seed=0):
    """Write <name>.pdparams (random, non-trivial float32 weights) and <name>.npz.

    The npz holds, for each input i: image_i [B,3,H,W]; heatmap_i (LOGITS, before the sigmoid
    that ppdet's head applies), size_i, offset_i [B,2,H/4,W/4] from a float32 run; the same maps
    from a float64 run of the same weights as heatmap64_i, size64_i, offset64_i (float32 rounding
    alone moves deep random nets by ~1e-3, so exactness is judged in float64); and detections_i
    [B,100,6] from ppdet's post-process on the float64 maps (class, score, x1, y1, x2, y2 in
    input pixels).
    """
    model = build(name, seed)
    inputs = [fixed_images(shape, seed + i) for i, shape in enumerate(sizes)]
    randomize(model, inputs[0], seed)
    os.makedirs(out_dir, exist_ok=True)
    paddle.save(model.state_dict(), os.path.join(out_dir, f"{name}.pdparams"))
    arrays = {f"image_{i}": images for i, images in enumerate(inputs)}
    for suffix, dtype in (("", "float32"), ("64", "float64")):
        model.to(dtype=dtype)
        with paddle.no_grad():
            for i, images in enumerate(inputs):
                outputs = model(paddle.to_tensor(images.astype(dtype)))
                for key, value in outputs.items():
                    arrays[f"{key}{suffix}_{i}"] = value.numpy()
                if dtype == "float64":
                    arrays[f"detections_{i}"] = paddle_detections(
                        outputs["heatmap"], outputs["size"], outputs["offset"], images.shape[2:])
    np.savez(os.path.join(out_dir, f"{name}.npz"), **arrays)
    for i in range(len(inputs)):
        logits = arrays[f"heatmap_{i}"]
        rounding = np.abs(logits - arrays[f"heatmap64_{i}"]).max()
        print(f"{name} input {i} {list(inputs[i].shape)}: heatmap logits mean {logits.mean():.3f} "
              f"std {logits.std():.3f}; size std {arrays[f'size_{i}'].std():.3f}; top score "
              f"{arrays[f'detections_{i}'][0, 0, 1]:.4f}; float32 vs float64 {rounding:.2e}")


# The ImageNet classifier's own layers that each row's pretrained file carries beside the backbone.
CLASSIFIER_KEYS = {
    "centernet_dla34": ["fc.weight", "fc.bias"],
    "centernet_r50": ["fc.weight", "fc.bias"],
    "centernet_mbv1": ["out.weight", "out.bias"],
    "centernet_mbv3_small": ["last_second_conv.conv.weight", "last_second_conv.bn._mean", "last_conv.weight",
                             "out.weight", "out.bias"],
    "centernet_mbv3_large": ["last_second_conv.conv.weight", "last_second_conv.bn._variance", "last_conv.weight",
                             "out.weight", "out.bias"],
    "centernet_shufflenetv2": ["_last_conv._conv.weight", "_last_conv._batch_norm.weight", "_fc.weight", "_fc.bias"],
}


def make_backbone_reference(name, out_dir, size, seed=0):
    """PaddleDetection's start from ImageNet weights, for ``test_paddle_backbone``.

    A model with non-trivial random weights gives its backbone state dict, as the pretrained files
    hold it (no ``backbone.`` prefix, no DCN offset convs, plus classifier layers), to
    ``<name>_imagenet.pdparams``. ``ppdet.utils.checkpoint.load_pretrain_weight`` loads that file into
    a fresh model; ``<name>_backbone.npz`` holds the keys whose values it changed (``loaded``), the
    input image and that backbone's float64 features (``feature_i``) in eval mode.
    """
    from ppdet.utils.checkpoint import load_pretrain_weight

    source = build(name, seed)
    image = fixed_images(size, seed)
    randomize(source, image, seed)
    state = {k: v for k, v in source.backbone.state_dict().items() if "conv_offset" not in k}
    rng = np.random.default_rng(seed)
    state.update({k: paddle.to_tensor(rng.normal(size=16).astype("float32")) for k in CLASSIFIER_KEYS[name]})
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}_imagenet.pdparams")
    paddle.save(state, path)

    model = build(name, seed + 1)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    load_pretrain_weight(model, path)
    loaded = [k for k, v in model.state_dict().items() if not np.array_equal(v.numpy(), before[k])]
    model.eval()
    model.to(dtype="float64")
    with paddle.no_grad():
        features = model.backbone({"image": paddle.to_tensor(image.astype("float64"))})
    arrays = {f"feature_{i}": feature.numpy() for i, feature in enumerate(features)}
    np.savez(os.path.join(out_dir, f"{name}_backbone.npz"), image=image, loaded=np.array(loaded), **arrays)
    print(f"{name}: {len(state)} file entries, {len(loaded)} model tensors set by load_pretrain_weight, "
          f"{len(features)} features -> {out_dir}")


def parse_size(text):
    """'2x256x256' -> (2, 256, 256)."""
    parts = [int(p) for p in text.lower().split("x")]
    if len(parts) != 3 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"size must be BxHxW, got {text!r}")
    return tuple(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    keys = sub.add_parser("keys", help="dump state-dict keys and check parameter counts")
    keys.add_argument("models", nargs="*", default=list(ZOO))
    keys.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "scratch",
                                                    "paddle_keys"))
    reference = sub.add_parser("reference", help="weights + outputs for equivalence tests")
    reference.add_argument("model", choices=list(ZOO))
    reference.add_argument("--out", required=True)
    reference.add_argument("--sizes", nargs="+", type=parse_size,
                           default=[(1, 512, 512), (1, 384, 640)], help="BxHxW per input")
    reference.add_argument("--seed", type=int, default=0)
    backbone = sub.add_parser("backbone", help="ImageNet-style backbone file + what ppdet loads from it")
    backbone.add_argument("model", choices=list(ZOO))
    backbone.add_argument("--out", required=True)
    backbone.add_argument("--size", type=parse_size, default=(1, 128, 128), help="BxHxW of the input")
    backbone.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    paddle.set_device("cpu")
    if args.command == "keys":
        os.makedirs(args.out, exist_ok=True)
        ok = [dump_keys(name, args.out) for name in args.models]
        return 0 if all(ok) else 1
    if args.command == "backbone":
        make_backbone_reference(args.model, args.out, args.size, args.seed)
        return 0
    make_reference(args.model, args.out, args.sizes, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
