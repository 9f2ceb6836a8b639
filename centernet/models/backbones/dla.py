"""DLA-34 (Deep Layer Aggregation, arXiv:1707.06484) as PaddleDetection builds it for CenterNet.

Structure and state-dict names follow ``ppdet/modeling/backbones/dla.py`` (paddledet 2.6.0):
``base_layer``, ``level0`` ... ``level5``; ``level2`` to ``level5`` are aggregation trees of basic
residual blocks. The backbone returns all six levels (strides 1, 2, 4, 8, 16, 32).
"""

import torch
from torch import nn

from ..layers import ConvNormLayer

__all__ = ["DLA", "dla34"]

# depth -> (blocks or tree levels per level, channels per level)
DLA_CONFIGS = {34: ((1, 1, 1, 2, 2, 1), (16, 32, 64, 128, 256, 512))}


class BasicBlock(nn.Module):
    """Two 3x3 ConvNorm layers with a residual connection (the residual may come from outside)."""

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = ConvNormLayer(in_channels, out_channels, 3, stride=stride)
        self.conv2 = ConvNormLayer(out_channels, out_channels, 3)

    def forward(self, x, residual=None):
        residual = x if residual is None else residual
        out = torch.relu(self.conv1(x))
        return torch.relu(self.conv2(out) + residual)


class Root(nn.Module):
    """Aggregation node: concatenate children along channels, 1x1 ConvNorm, ReLU."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = ConvNormLayer(in_channels, out_channels, 1)

    def forward(self, children):
        return torch.relu(self.conv(torch.cat(children, dim=1)))


class Tree(nn.Module):
    """Hierarchical aggregation of ``2 ** levels`` basic blocks.

    Args:
        levels: depth of the tree; 1 means two blocks joined by a :class:`Root`.
        stride: down-sampling of the first block (a max-pool gives the matching residual).
        level_root: whether this tree's (down-sampled) input also feeds the root.
        root_channels: input channels of the root (0: two children of ``out_channels``).
    """

    def __init__(self, levels, in_channels, out_channels, stride=1, level_root=False,
                 root_channels=0):
        super().__init__()
        if root_channels == 0:
            root_channels = 2 * out_channels
        if level_root:
            root_channels += in_channels
        if levels == 1:
            self.tree1 = BasicBlock(in_channels, out_channels, stride)
            self.tree2 = BasicBlock(out_channels, out_channels, 1)
            self.root = Root(root_channels, out_channels)
        else:
            self.tree1 = Tree(levels - 1, in_channels, out_channels, stride)
            self.tree2 = Tree(levels - 1, out_channels, out_channels, 1,
                              root_channels=root_channels + out_channels)
        self.levels = levels
        self.level_root = level_root
        self.downsample = nn.MaxPool2d(stride, stride) if stride > 1 else None
        # Paddle keeps this projection also for levels > 1, where the subtree computes its own
        # residual and this one goes unused: the parameters exist (they are in the weights), but
        # we only run the projection where its result is used.
        self.project = (ConvNormLayer(in_channels, out_channels, 1)
                        if in_channels != out_channels else None)

    def forward(self, x, children=None):
        children = [] if children is None else children
        bottom = self.downsample(x) if self.downsample is not None else x
        if self.level_root:
            children.append(bottom)
        if self.levels == 1:
            residual = self.project(bottom) if self.project is not None else bottom
            x1 = self.tree1(x, residual)
            x2 = self.tree2(x1)
            return self.root([x2, x1] + children)
        x1 = self.tree1(x)
        children.append(x1)
        return self.tree2(x1, children=children)


def _conv_level(in_channels, out_channels, num_convs, stride=1):
    """``num_convs`` 3x3 ConvNorm + ReLU pairs; the first one strides."""
    layers = []
    for i in range(num_convs):
        layers += [ConvNormLayer(in_channels, out_channels, 3, stride=stride if i == 0 else 1),
                   nn.ReLU()]
        in_channels = out_channels
    return nn.Sequential(*layers)


class DLA(nn.Module):
    """DLA backbone: ``forward(images [B, 3, H, W]) -> [level0 .. level5]``.

    ``level_i`` has ``out_channels[i]`` channels at stride ``strides[i]`` (H and W should be
    multiples of 32 so that the neck's up-sampled maps line up).
    """

    def __init__(self, depth=34):
        super().__init__()
        if depth not in DLA_CONFIGS:
            raise ValueError(f"DLA depth {depth} is not supported; known: {sorted(DLA_CONFIGS)}")
        levels, channels = DLA_CONFIGS[depth]
        self.out_channels = list(channels)
        self.strides = [1, 2, 4, 8, 16, 32]
        self.base_layer = nn.Sequential(ConvNormLayer(3, channels[0], 7), nn.ReLU())
        self.level0 = _conv_level(channels[0], channels[0], levels[0])
        self.level1 = _conv_level(channels[0], channels[1], levels[1], stride=2)
        self.level2 = Tree(levels[2], channels[1], channels[2], 2, level_root=False)
        self.level3 = Tree(levels[3], channels[2], channels[3], 2, level_root=True)
        self.level4 = Tree(levels[4], channels[3], channels[4], 2, level_root=True)
        self.level5 = Tree(levels[5], channels[4], channels[5], 2, level_root=True)

    def forward(self, images):
        x = self.base_layer(images)  # [B, 16, H, W]
        features = []
        for i in range(len(self.out_channels)):
            x = getattr(self, f"level{i}")(x)  # [B, C_i, H / 2**i, W / 2**i]
            features.append(x)
        return features


def dla34():
    """DLA-34 with PaddleDetection's CenterNet settings (no residual root)."""
    return DLA(depth=34)
