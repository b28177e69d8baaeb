"""The 8-layer ResNet of the paper's Table 8 (image experiments)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ResBlock(nn.Module):
    """Two 3x3 convolutions with LeakyReLU(0.2) and an identity (or 1x1) shortcut."""

    def __init__(self, c_in: int, c_out: int, slope: float = 0.2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)
        self.slope = slope

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.leaky_relu(x, self.slope))
        h = self.conv2(F.leaky_relu(h, self.slope))
        return h + self.shortcut(x)


class ResNet8(nn.Module):
    """ResNet-8: one 3x3 stem convolution, three residual blocks (six convolutions), then
    global average pooling; the blocks are separated by 2x2 average pooling.

    With ``width`` F = 128 it has about 0.9M parameters (plus the projector's ~0.1M);
    the output is an F-dimensional feature vector.
    """

    def __init__(self, in_channels: int = 3, width: int = 128, slope: float = 0.2) -> None:
        super().__init__()
        self.out_dim = width
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.blocks = nn.ModuleList([ResBlock(width, width, slope) for _ in range(3)])
        self.slope = slope

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i < len(self.blocks) - 1:
                h = F.avg_pool2d(h, 2)
        h = F.leaky_relu(h, self.slope)
        return h.mean(dim=(2, 3))
