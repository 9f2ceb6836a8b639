"""CenterNet = backbone + neck + head; ``forward(images)`` returns the raw prediction maps."""

from torch import nn

__all__ = ["CenterNet"]


class CenterNet(nn.Module):
    """Objects as Points (arXiv:1904.07850).

    ``forward(images [B, 3, H, W])`` (normalised; H and W multiples of the backbone's coarsest
    stride, 32 for every zoo model) returns::

        {"heatmap": [B, num_classes, H/4, W/4] logits (no sigmoid),
         "wh":      [B, 2, H/4, W/4] box size in output pixels,
         "offset":  [B, 2, H/4, W/4] sub-pixel center offset (x, y)}

    Module names ``backbone``, ``neck``, ``head`` match PaddleDetection's, so the state-dict keys of
    a zoo model equal Paddle's (BatchNorm statistics renamed).
    """

    stride = 4

    def __init__(self, backbone, neck, head):
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.num_classes = head.num_classes
        self.size_divisor = max(backbone.strides)

    def forward(self, images):
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"CenterNet expects images of shape [B, 3, H, W], got "
                             f"{list(images.shape)}")
        height, width = images.shape[-2:]
        if height % self.size_divisor or width % self.size_divisor:
            raise ValueError(f"CenterNet: image height and width must be multiples of "
                             f"{self.size_divisor}, got {height}x{width} (pad the input)")
        features = self.backbone(images)  # list of [B, C_i, H / s_i, W / s_i]
        fused = self.neck(features)  # [B, C, H/4, W/4]
        return self.head(fused)
