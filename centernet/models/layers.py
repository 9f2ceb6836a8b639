"""Small building blocks shared by backbones and necks."""

from torch import nn

from .deform_conv import DeformConv2d

__all__ = ["ConvNormLayer", "paddle_default_init_"]


def paddle_default_init_(conv: nn.Conv2d) -> None:
    """Paddle's default ``nn.Conv2D`` initialiser (when no ``weight_attr`` initialiser is given):
    normal(0, sqrt(2 / (in_channels * kh * kw))), bias 0.

    Paddle counts *all* input channels, where PyTorch's ``kaiming_normal_`` counts those of one
    group: for a grouped or depthwise kernel Paddle's start is sqrt(groups) times smaller (a
    MobileNetV3 depthwise layer of 576 channels: std 0.012 against 0.28). Adam moves every weight
    by about the learning rate per step whatever its size, so this is not cosmetic: from Paddle's
    small start the depthwise filters are reshaped within the first hundred steps, from PyTorch's
    they stay close to random for most of a short run.
    """
    kernel_h, kernel_w = conv.weight.shape[2:]
    nn.init.normal_(conv.weight, std=(2.0 / (conv.in_channels * kernel_h * kernel_w)) ** 0.5)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class ConvNormLayer(nn.Module):
    """Convolution (plain or DCNv2) followed by BatchNorm, named as PaddleDetection's ``ConvNormLayer``.

    State-dict names: ``conv.*`` and ``norm.*``. Padding is ``(kernel_size - 1) // 2`` ("same" for odd
    kernels). With ``use_dcn`` the convolution is a :class:`DeformConv2d` and always has a bias, as
    in Paddle. Conv weights start normal(0, 0.01) (Paddle's default here); BatchNorm uses PyTorch's
    defaults, which equal Paddle's (eps 1e-5, momentum 0.9 in Paddle's convention).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1,
                 use_dcn=False, bias=False):
        super().__init__()
        if use_dcn:
            self.conv = DeformConv2d(in_channels, out_channels, kernel_size, stride=stride,
                                     groups=groups, bias=True)
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                                  padding=(kernel_size - 1) // 2, groups=groups, bias=bias)
            if bias:
                nn.init.zeros_(self.conv.bias)
        nn.init.normal_(self.weight, std=0.01)
        self.norm = nn.BatchNorm2d(out_channels)

    @property
    def weight(self):
        """The convolution kernel (deformable or plain), for initialisers."""
        return self.conv.conv_dcn.weight if isinstance(self.conv, DeformConv2d) else self.conv.weight

    def forward(self, x):
        return self.norm(self.conv(x))
