"""Key mapping from other projects' weight files to our state-dict names: small pure functions.

Our zoo models keep PaddleDetection's module names (``backbone.``, ``neck.``, ``head.``,
``conv_offset`` / ``conv_dcn`` for DCNv2 ...), so for Paddle files only the BatchNorm statistics are
renamed (Paddle lays out conv and BatchNorm tensors as PyTorch does). The original CenterNet (xingyizhou/CenterNet, DLA-34 "DLASeg")
names its layers differently; :func:`original_key` translates them.

Each function maps ONE key and returns ``None`` for entries that have no place in our model
(e.g. the ImageNet classifier ``base.fc`` that the original DLA-34 checkpoint carries).
"""

from __future__ import annotations

import re

__all__ = ["paddle_key", "original_key", "strip_prefix"]


def paddle_key(key: str) -> str:
    """PaddleDetection name -> ours: ``norm._mean`` / ``norm._variance`` become
    ``running_mean`` / ``running_var``; every other name is already ours."""
    key = re.sub(r"\._mean$", ".running_mean", key)
    return re.sub(r"\._variance$", ".running_var", key)


def strip_prefix(key: str, prefix: str = "module.") -> str:
    """Drop the ``module.`` that ``nn.DataParallel`` puts in front of every key."""
    return key[len(prefix):] if key.startswith(prefix) else key


# Original CenterNet DLA-34 -> ours, applied in order, each at most once per key.
# Original layout: Sequential(conv, bn, relu) at 0/1/2; BasicBlock conv1/bn1/conv2/bn2; Root
# conv/bn; project Sequential(conv, bn); DeformConv = conv (DCN with conv_offset_mask) + actf
# Sequential(bn, relu); heads hm/wh/reg as Sequential(conv, relu, conv).
# Ours (Paddle's): ConvNormLayer ``<i>.conv`` + ``<i>.norm``; DCN ``conv_offset`` + ``conv_dcn``.
_ORIGINAL_RULES = [
    (r"^base\.fc\.", None),  # ImageNet classifier of the pretrained DLA: not part of the detector
    (r"^base\.(base_layer|level0|level1)\.0\.", r"backbone.\1.0.conv."),
    (r"^base\.(base_layer|level0|level1)\.1\.", r"backbone.\1.0.norm."),
    (r"^base\.", "backbone."),
    (r"\.conv([12])\.weight$", r".conv\1.conv.weight"),
    (r"\.bn([12])\.", r".conv\1.norm."),
    (r"\.root\.conv\.weight$", ".root.conv.conv.weight"),
    (r"\.root\.bn\.", ".root.conv.norm."),
    (r"\.project\.0\.", ".project.conv."),
    (r"\.project\.1\.", ".project.norm."),
    (r"^(dla_up|ida_up)\.", r"neck.\1."),
    (r"\.((?:proj|node)_\d+)\.conv\.conv_offset_mask\.", r".\1.0.conv.conv_offset."),
    (r"\.((?:proj|node)_\d+)\.conv\.(weight|bias)$", r".\1.0.conv.conv_dcn.\2"),
    (r"\.((?:proj|node)_\d+)\.actf\.0\.", r".\1.0.norm."),
    (r"^hm\.([02])\.", r"head.heatmap.\1.conv."),
    (r"^wh\.([02])\.", r"head.size.\1.conv."),
    (r"^reg\.([02])\.", r"head.offset.\1.conv."),
]


def original_key(key: str) -> str | None:
    """Original CenterNet (DLA-34 DLASeg) name -> ours, or ``None`` for entries we drop.

    >>> original_key("module.dla_up.ida_0.proj_1.conv.conv_offset_mask.weight")
    'neck.dla_up.ida_0.proj_1.0.conv.conv_offset.weight'
    >>> original_key("hm.2.bias")
    'head.heatmap.2.conv.bias'
    """
    key = strip_prefix(key)
    for pattern, replacement in _ORIGINAL_RULES:
        if re.search(pattern, key):
            if replacement is None:
                return None
            key = re.sub(pattern, replacement, key, count=1)
    return key


def looks_original(keys) -> bool:
    """Whether a torch state dict uses the original CenterNet's names (heads ``hm``/``wh``/``reg``
    or the DLA under ``base.``) rather than ours."""
    return any(re.match(r"^(module\.)?(hm\.|base\.|dla_up\.)", key) for key in keys)
