"""MLP encoder of the toy experiments (paper appendix L)."""

from __future__ import annotations

from torch import Tensor, nn


def mlp(dims: list[int], slope: float = 0.2) -> nn.Sequential:
    """Linear layers of sizes ``dims`` with LeakyReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:
            layers.append(nn.LeakyReLU(slope))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """``in_dim -> hidden -> hidden -> out_dim`` (toy: 2 -> 100 -> 100 -> 2)."""

    def __init__(self, in_dim: int, hidden: int = 100, out_dim: int = 2, depth: int = 2) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.net = mlp([in_dim] + [hidden] * depth + [out_dim])

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))
