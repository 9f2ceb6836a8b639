"""The fastest exact inference form of a model: BatchNorm folded into the convolutions before it,
activations in place, channels-last memory, optionally half precision on a GPU (on CPU, pair it
with ``centernet.allocator.keep_freed_memory()``).

    fast = centernet.models.fuse.optimize_for_inference(model)   # a new module; model unchanged
    with torch.inference_mode():
        outputs = fast(images)                                     # same maps as model(images)

Every zoo model puts each BatchNorm right after a convolution (``ConvNormLayer``, ``ConvBNLayer``,
``ConvBN``, or consecutive children of an ``nn.Sequential``). In eval mode the BatchNorm is the
per-channel affine ``y = x * s + t`` with ``s = gamma / sqrt(var + eps)`` and
``t = beta - mean * s``, so the convolution's kernel is scaled by ``s`` and ``t`` joins its bias
(for a deformable convolution too: its output is linear in kernel and bias). The result differs
from the unfolded model only by float rounding (about 1e-6 relative in float32).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .backbones import mobilenet, resnet
from .deform_conv import DeformConv2d
from .layers import ConvNormLayer

__all__ = ["fold_batch_norms", "activations_in_place", "optimize_for_inference"]

# class -> (convolution attribute, BatchNorm attribute); forward applies the norm right after the conv
_CONV_NORM_PAIRS = {
    ConvNormLayer: ("conv", "norm"),
    resnet.ConvNormLayer: ("conv", "norm"),
    mobilenet.ConvBNLayer: ("_conv", "_batch_norm"),
    mobilenet.ConvBN: ("conv", "bn"),
}


class ChannelShift(nn.Module):
    """``x + shift`` per channel: what is left of a folded BatchNorm when the convolution before
    it has no bias it would apply (ResNet's deformable layer calls its kernel without one)."""

    def __init__(self, shift: torch.Tensor):
        super().__init__()
        self.register_buffer("shift", shift)

    def forward(self, x):
        return x + self.shift.view(1, -1, 1, 1)  # [B, C, H, W]


@torch.no_grad()
def _fold(conv: nn.Module, norm: nn.BatchNorm2d, bias_used: bool) -> nn.Module:
    """Fold eval-mode ``norm`` into ``conv`` in place; returns the module that replaces ``norm``."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)  # [C_out]
    shift = norm.bias - norm.running_mean * scale
    holder = conv.conv_dcn if isinstance(conv, DeformConv2d) else conv
    if isinstance(holder, nn.ConvTranspose2d) or holder.weight.shape[0] != scale.shape[0]:
        raise ValueError(f"cannot fold {norm} into {conv}")
    holder.weight.mul_(scale.view(-1, 1, 1, 1))
    if holder.bias is not None:
        shift = shift + holder.bias * scale
    if not bias_used:
        return ChannelShift(shift)
    holder.bias = nn.Parameter(shift)
    return nn.Identity()


def fold_batch_norms(model: nn.Module) -> int:
    """Fold every BatchNorm that follows a convolution into it, IN PLACE (inference only: the
    model no longer has those BatchNorms to train). Returns how many were folded."""
    folded = 0
    for module in list(model.modules()):
        pair = _CONV_NORM_PAIRS.get(type(module))
        if pair is not None:
            conv_name, norm_name = pair
            norm = getattr(module, norm_name)
            if isinstance(norm, nn.BatchNorm2d):
                # ResNet's deformable layer applies conv.weight without conv.bias
                bias_used = not getattr(module, "dcn_v2", False)
                setattr(module, norm_name, _fold(getattr(module, conv_name), norm, bias_used))
                folded += 1
        elif isinstance(module, nn.Sequential):
            names = list(module._modules)
            for conv_name, norm_name in zip(names, names[1:]):
                conv, norm = module._modules[conv_name], module._modules[norm_name]
                if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                    module._modules[norm_name] = _fold(conv, norm, bias_used=True)
                    folded += 1
    return folded


def _returns_new_tensor(module: nn.Module) -> bool:
    """Whether ``module``'s output is a tensor nothing else holds (a convolution's result)."""
    if isinstance(module, nn.Sequential):
        return len(module) > 0 and _returns_new_tensor(module[-1])
    return isinstance(module, (nn.Conv2d, DeformConv2d, *_CONV_NORM_PAIRS))


def activations_in_place(model: nn.Module) -> int:
    """Let every activation module that takes a convolution's fresh output overwrite it (no new
    buffer per activation). Returns how many were switched."""
    switched = 0
    for module in model.modules():
        if type(module) in (mobilenet.ConvBNLayer, mobilenet.ConvBN):
            candidates = [module.act]  # act(norm(conv(x))): the norm's (or folded conv's) output
        elif isinstance(module, nn.Sequential):
            children = list(module)
            candidates = [act for before, act in zip(children, children[1:]) if _returns_new_tensor(before)]
        else:
            continue
        for act in candidates:
            if hasattr(act, "inplace") and not act.inplace:
                act.inplace = True
                switched += 1
    return switched


class _InferenceInput(nn.Module):
    """Runs ``model`` on channels-last and/or half-precision input; returns the maps in
    the input's dtype."""

    def __init__(self, model: nn.Module, dtype: torch.dtype | None, channels_last: bool):
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.num_classes = model.num_classes
        self.stride = model.stride
        self.size_divisor = getattr(model, "size_divisor", 32)

    def forward(self, images):
        x = images.to(dtype=self.dtype or images.dtype, memory_format=self.memory_format)
        outputs = self.model(x)
        return {key: value.to(images.dtype) for key, value in outputs.items()}


def optimize_for_inference(model: nn.Module, channels_last: bool = True,
                           dtype: torch.dtype | None = None) -> nn.Module:
    """A copy of ``model`` for inference: eval mode, BatchNorms folded, activations in place,
    channels-last weights and inputs, parameters without gradients; ``dtype`` (e.g. ``torch.float16`` or
    ``torch.bfloat16`` on a GPU) runs it in that precision and returns float maps.

    Same ``forward(images) -> {"heatmap", "wh", "offset"}`` and attributes (``num_classes``,
    ``stride``) as the model, so ``Detector`` and ``DetectionGraph`` take it. Run it under
    ``torch.inference_mode()``.
    """
    fast = copy.deepcopy(model).eval()
    fold_batch_norms(fast)
    activations_in_place(fast)
    fast.requires_grad_(False)
    if dtype is not None:
        fast = fast.to(dtype)
    if not channels_last and dtype is None:
        return fast
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    return _InferenceInput(fast, dtype, channels_last)
