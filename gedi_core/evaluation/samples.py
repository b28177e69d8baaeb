"""Samples from the learned energy by SGLD (paper Figure 6: 500 steps from noise)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from gedi_core.models import evaluating
from gedi_core.methods import Method
from gedi_core.sgld import sgld


def sample_images(method: Method, n: int = 100, steps: int = 500, step_size: float | None = None,
                  noise: float | None = None, from_buffer: bool = False, seed: int = 0,
                  batch_size: int = 100) -> Tensor:
    """``n`` samples after ``steps`` SGLD steps, starting from uniform noise in the buffer's range
    (or from the run's replay buffer with ``from_buffer``); step size and noise default to the run's."""
    cfg = method.cfg.sgld
    gen = torch.Generator().manual_seed(seed)
    shape = method.input_shape
    data = method.replay_buffer() if from_buffer else None
    if data is not None:
        x0 = data[torch.randint(len(data), (n,), generator=gen).to(data.device)].cpu()
    else:
        x0 = cfg.init_low + (cfg.init_high - cfg.init_low) * torch.rand((n, *shape), generator=gen)
    torch.manual_seed(seed)
    with evaluating(method):
        out = [sgld(method.model.energy, chunk.to(method.device), steps,
                    cfg.step_size if step_size is None else step_size, cfg.noise if noise is None else noise).cpu()
               for chunk in x0.split(batch_size)]
    return torch.cat(out)


def save_samples(method: Method, path: str | Path, n: int = 100, steps: int = 500, sort_by_cluster: bool = True,
                 **kwargs) -> Tensor:
    """Sample, optionally sort by predicted cluster, and save a PNG grid; returns the samples."""
    from gedi_core.figures import save_image_grid

    x = sample_images(method, n=n, steps=steps, **kwargs)
    if sort_by_cluster:
        with torch.no_grad():
            order = method.model(x.to(method.device)).argmax(-1).cpu().argsort(stable=True)
        x = x[order]
    save_image_grid(x.clamp(-1, 1), path, nrow=int(round(n ** 0.5)) or 1)
    return x
