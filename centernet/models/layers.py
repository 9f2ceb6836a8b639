"""Small building blocks shared by backbones and necks."""

from torch import nn

from .deform_conv import DeformConv2d

__all__ = ["ConvNormLayer"]


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
