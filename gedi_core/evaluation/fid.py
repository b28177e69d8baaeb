"""Fréchet Inception Distance through torchmetrics (``pip install 'gedi-nesy[fid]'``).

The default feature extractor is torch-fidelity's Inception-v3 (2048-d pool features), whose
weights are downloaded on first use into torch's hub cache (``~/.cache/torch/hub/checkpoints``).
Offline, put ``weights-inception-2015-12-05-6726825d.pth`` there, or pass another extractor:
``module.path:factory`` (a callable returning an ``nn.Module`` that maps float images in
``[0, 1]`` of shape (N, 3, H, W) to (N, d) features) or a TorchScript file (``*.pt``).
Images in ``[-1, 1]`` are mapped to ``[0, 1]``; one-channel images are repeated to three.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from gedi_core.errors import GediError

INCEPTION = "inception"


def load_feature_extractor(spec: str | nn.Module | None) -> nn.Module | int:
    """``None``/``"inception"`` -> 2048 (torchmetrics' Inception); ``pkg.mod:fn`` or a TorchScript path -> module."""
    if spec is None or (isinstance(spec, str) and spec == INCEPTION):
        return 2048
    if isinstance(spec, nn.Module):
        return spec
    if ":" in spec and not Path(spec).exists():
        mod_name, fn_name = spec.split(":", 1)
        try:
            factory = getattr(importlib.import_module(mod_name), fn_name)
        except (ImportError, AttributeError) as exc:
            raise GediError(f"--fid-features {spec}: cannot import it ({exc})") from None
        module = factory()
    elif Path(spec).is_file():
        with warnings.catch_warnings():  # torch >= 2.5 marks TorchScript deprecated; it still loads
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
            module = torch.jit.load(spec, map_location="cpu")
    else:
        raise GediError(f"--fid-features {spec}: expected 'inception', module.path:factory or a TorchScript file")
    if not isinstance(module, nn.Module):
        raise GediError(f"--fid-features {spec}: the factory returned {type(module).__name__}, not an nn.Module")
    return module.eval()


def _to_unit_rgb(x: Tensor) -> Tensor:
    x = x.float()
    if x.min() < 0:
        x = (x + 1) / 2
    x = x.clamp(0, 1)
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


def make_fid_metric(features: str | nn.Module | None = None, image_size: tuple[int, int] = (32, 32)):
    """A torchmetrics ``FrechetInceptionDistance`` with the chosen extractor; a clear
    :class:`GediError` when torchmetrics / torch-fidelity or the Inception weights are missing."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        raise GediError("FID needs torchmetrics and torch-fidelity: pip install 'gedi-nesy[fid]'") from None
    feature = load_feature_extractor(features)
    try:
        if isinstance(feature, int):
            return FrechetInceptionDistance(feature=feature, normalize=True)
        return FrechetInceptionDistance(feature=feature, normalize=True, input_img_size=(3, *image_size))
    except ModuleNotFoundError as exc:
        raise GediError(f"FID with Inception features needs torch-fidelity ({exc}): pip install 'gedi-nesy[fid]'") \
            from None
    except Exception as exc:  # weights download failed (offline) or the cache is corrupt
        raise GediError(
            "cannot load the Inception-v3 weights for FID (offline?): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. Put "
            "weights-inception-2015-12-05-6726825d.pth into ~/.cache/torch/hub/checkpoints/, "
            "or pass another extractor with --fid-features module.path:factory or a TorchScript file"
        ) from None


def fid_score(real: Tensor, fake: Tensor, features: str | nn.Module | None = None, batch_size: int = 100,
              device: str | torch.device = "cpu", metric=None) -> float:
    """FID between two image sets (N, C, H, W) in ``[-1, 1]`` or ``[0, 1]``."""
    metric = (metric if metric is not None else make_fid_metric(features, tuple(real.shape[-2:]))).to(device)
    metric.reset()
    with torch.no_grad():
        for chunk in real.split(batch_size):
            metric.update(_to_unit_rgb(chunk).to(device), real=True)
        for chunk in fake.split(batch_size):
            metric.update(_to_unit_rgb(chunk).to(device), real=False)
        return float(metric.compute())
