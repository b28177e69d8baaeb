"""LeNet-5 style backbone for 28x28 digit images (the paper's NeSy network)."""

from __future__ import annotations

from torch import Tensor, nn

from gedi_core.errors import GediError


class LeNet(nn.Module):
    """DeepProbLog's MNIST encoder (two 5x5 convolutions, two linear layers) for 28x28 inputs."""

    def __init__(self, in_channels: int = 1, out_dim: int = 84) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5),
            nn.MaxPool2d(2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(6, 16, 5),
            nn.MaxPool2d(2),
            nn.LeakyReLU(0.2),
        )
        self.fc = nn.Sequential(nn.Linear(16 * 4 * 4, 120), nn.LeakyReLU(0.2), nn.Linear(120, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (28, 28):
            raise GediError(f"LeNet expects 28x28 images, got shape {tuple(x.shape)}")
        return self.fc(self.conv(x).flatten(1))
