"""The torch device a run asks for, checked before any data is loaded."""

from __future__ import annotations

import contextlib

import torch

from gedi_core.errors import GediError


def resolve_device(name: str) -> torch.device:
    """``torch.device(name)`` if this machine has it; else :class:`GediError` naming the device.

    Accepts ``cpu``, ``cuda``, ``cuda:N`` and ``mps``."""
    try:
        device = torch.device(str(name))
    except (RuntimeError, TypeError, ValueError):
        raise GediError(f"device '{name}': not a torch device (use cpu, cuda or cuda:N)") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GediError(f"device '{name}': CUDA is not available here (use --device cpu)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise GediError(f"device '{name}': this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})")
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise GediError(f"device '{name}': MPS is not available here (use --device cpu)")
        return device
    raise GediError(f"device '{name}': unsupported device type '{device.type}' (use cpu, cuda or cuda:N)")


def mixed_precision(amp: bool, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on ``device`` (CUDA, or CPU: the same code path, which the CPU tests
    cover; on most CPUs it is slower than float32) when ``amp`` is on; otherwise nothing."""
    if amp and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
