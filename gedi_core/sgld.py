"""SGLD sampling from an energy model with a persistent replay buffer (JEM-style)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from gedi_core.config import SGLD_RANGES, SGLDConfig, check_section, check_sgld_init
from gedi_core.errors import GediError

EnergyFn = Callable[[Tensor], Tensor]


def sgld(energy_fn: EnergyFn, x: Tensor, steps: int, step_size: float, noise: float) -> Tensor:
    """Run ``steps`` Langevin steps ``x <- x - step_size * dE/dx + noise * N(0, I)``.

    Only ``x`` receives gradients (the parameters' ``.grad`` are untouched); the result is
    detached. ``energy_fn`` maps a batch to one energy per sample.
    """
    x = x.detach()
    for _ in range(steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(energy_fn(x).sum(), x)
        x = (x - step_size * grad + noise * torch.randn_like(x)).detach()
    return x


class ReplayBuffer:
    """A persistent buffer of SGLD chains.

    ``sample(n)`` picks ``n`` stored chains at random and restarts each from uniform noise
    in ``[init_low, init_high]`` with probability ``reinit_freq``; ``update`` writes the
    chains back after SGLD.
    """

    def __init__(
        self,
        size: int,
        shape: tuple[int, ...],
        init_low: float = -1.0,
        init_high: float = 1.0,
        reinit_freq: float = 0.05,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.shape = tuple(shape)
        self.init_low = init_low
        self.init_high = init_high
        self.reinit_freq = reinit_freq
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.device = torch.device(device)
        self.data = self.uniform(size)

    def __len__(self) -> int:
        return self.data.shape[0]

    def uniform(self, n: int) -> Tensor:
        u = torch.rand((n, *self.shape), generator=self.generator)
        return (self.init_low + (self.init_high - self.init_low) * u).to(self.device)

    def sample(self, n: int) -> tuple[Tensor, Tensor]:
        """``n`` starting points and their buffer indices (for :meth:`update`)."""
        idx = torch.randint(len(self), (n,), generator=self.generator)
        x = self.data[idx.to(self.device)].clone()
        reinit = torch.rand(n, generator=self.generator) < self.reinit_freq
        if reinit.any():
            x[reinit.to(self.device)] = self.uniform(int(reinit.sum()))
        return x, idx

    def to(self, device: torch.device | str) -> "ReplayBuffer":
        """Keep the chains on ``device`` (the model's)."""
        device = torch.device(device)
        if self.data.device != device:
            self.data = self.data.to(device)
        self.device = device
        return self

    def update(self, idx: Tensor, x: Tensor) -> None:
        self.data[idx.to(self.device)] = x.detach().to(self.device)

    def state_dict(self) -> dict:
        return {"data": self.data.detach().cpu().clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.data = state["data"].to(self.device)
        self.generator.set_state(state["generator"])


def check_sgld(cfg: SGLDConfig, where: str) -> None:
    """An :class:`SGLDConfig` that draws samples: its values in range (``steps`` >= 1, sizes and
    rates non-negative and finite, ``init_low < init_high``); else a :class:`GediError`."""
    check_section(cfg, SGLDConfig, SGLD_RANGES, where)
    if cfg.steps < 1:
        raise GediError(f"{where}: sgld.steps must be >= 1 to draw SGLD samples (L_GEN needs them; set its weight "
                        f"gen to 0 to drop it), got {cfg.steps}")
    check_sgld_init(cfg)


class EnergySampler:
    """Draws SGLD samples of a model's energy from a persistent :class:`ReplayBuffer`."""

    def __init__(self, cfg: SGLDConfig, shape: tuple[int, ...], seed: int = 0, device: torch.device | str = "cpu"):
        check_sgld(cfg, "EnergySampler")
        self.cfg = cfg
        self.buffer = ReplayBuffer(
            cfg.buffer_size,
            shape,
            cfg.init_low,
            cfg.init_high,
            cfg.reinit_freq,
            generator=torch.Generator().manual_seed(seed),
            device=device,
        )

    def draw(self, energy_fn: EnergyFn, n: int, steps: int | None = None) -> Tensor:
        """``n`` samples after ``steps`` (default: ``cfg.steps``) SGLD steps; the buffer is updated."""
        x0, idx = self.buffer.sample(n)
        x = sgld(energy_fn, x0, self.cfg.steps if steps is None else steps, self.cfg.step_size, self.cfg.noise)
        self.buffer.update(idx, x)
        return x

    def state_dict(self) -> dict:
        return self.buffer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.buffer.load_state_dict(state)
