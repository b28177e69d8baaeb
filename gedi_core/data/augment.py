"""Batched image augmentations of the paper's Table 9, applied to a whole batch on its device.

Images live in ``[-1, 1]`` (``x = 2 * pixel - 1``). One call draws independent parameters
for every image of the batch (a few small tensors from the method's ``torch.Generator``) and
applies every operation to the whole batch at once with torchvision's ``transforms.v2``
kernels or tensor arithmetic; there is no Python loop over images:

1. random crop: reflect-pad by ``crop_pad`` pixels and cut a window at a random offset; or, with
   ``crop_scale`` > 0 (not in the paper; SimCLR/SwAV's random resized crop), a window of a random
   share in ``[crop_scale, 1]`` of the area and aspect ratio in ``[3/4, 4/3]``, resized back to
   ``H x W`` (bilinear, one ``grid_sample`` for the batch);
2. horizontal flip with p = 0.5 (CIFAR only by default);
3. colour jitter with p = ``jitter_p`` (0.1): brightness, contrast, saturation factors in
   ``[1 - s, 1 + s]`` and a hue rotation in ``[-s/4, s/4]`` turns (YIQ rotation);
4. grayscale with p = ``gray_p`` (0.1);
5. additive Gaussian noise with sigma = ``aug_noise`` (0.03), after the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

# RGB <-> YIQ: hue rotation is a rotation of the (I, Q) chroma plane
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)


@dataclass
class ImageAugment:
    """The Table 9 augmentation as a callable ``augment(x, generator) -> x'`` on (B, C, H, W) batches."""

    crop_pad: int = 4
    crop_scale: float = 0.0
    hflip: bool = False
    jitter_p: float = 0.1
    jitter_strength: float = 0.4
    gray_p: float = 0.1
    noise: float = 0.03

    def _rand(self, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
        if generator is not None and generator.device != torch.device("cpu") and generator.device != device:
            generator = None
        gen_device = generator.device if generator is not None else torch.device("cpu")
        return torch.rand(shape, generator=generator, device=gen_device).to(device)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"ImageAugment expects (B, C, H, W) batches, got shape {tuple(x.shape)}")
        b, c, h, w = x.shape
        dev = x.device
        out = (x.float() + 1) / 2  # to [0, 1]
        if self.crop_scale > 0:
            out = self.random_resized_crop(out, generator)
        elif self.crop_pad > 0:
            out = self.random_crop(out, generator)
        if self.hflip:
            flip = self._rand((b,), generator, dev) < 0.5
            out = torch.where(flip[:, None, None, None], TF.horizontal_flip(out), out)
        if self.jitter_p > 0 and self.jitter_strength > 0:
            out = self.colour_jitter(out, generator)
        if self.gray_p > 0 and c == 3:
            gray = self._rand((b,), generator, dev) < self.gray_p
            out = torch.where(gray[:, None, None, None], TF.rgb_to_grayscale(out, num_output_channels=3), out)
        out = (out.clamp(0, 1) * 2 - 1).to(x.dtype)
        if self.noise > 0:
            if generator is not None and generator.device == dev:
                eps = torch.randn(out.shape, generator=generator, device=dev, dtype=out.dtype)
            elif generator is not None and dev.type != "cpu":
                eps = torch.randn_like(out)  # a CPU generator for a GPU batch: use the device's RNG
            else:
                eps = torch.randn(out.shape, generator=generator, dtype=out.dtype)
            out = out + self.noise * eps
        return out

    def random_crop(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """Pad by ``crop_pad`` (reflect) and cut an ``H x W`` window at a random offset per image."""
        b, c, h, w = x.shape
        p = self.crop_pad
        padded = TF.pad(x, [p, p, p, p], padding_mode="reflect" if p < min(h, w) else "constant")
        off = (self._rand((b, 2), generator, x.device) * (2 * p + 1)).long().clamp_max(2 * p)
        rows = off[:, 0:1] + torch.arange(h, device=x.device)  # (B, H)
        cols = off[:, 1:2] + torch.arange(w, device=x.device)  # (B, W)
        batch = torch.arange(b, device=x.device)[:, None, None]
        # advanced indexing: (B, H, W, C) -> (B, C, H, W)
        return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)

    def random_resized_crop(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """Cut a window of area share ``a ~ U[crop_scale, 1]`` and aspect ratio ``r`` (log-uniform in
        ``[3/4, 4/3]``) at a random position of each image and resize it to ``H x W``."""
        b = x.shape[0]
        u = self._rand((b, 4), generator, x.device)
        area = self.crop_scale + (1 - self.crop_scale) * u[:, 0]
        ratio = torch.exp(math.log(3 / 4) + math.log(16 / 9) * u[:, 1])
        w = (area * ratio).sqrt().clamp(max=1.0)  # window size as a share of the side
        h = (area / ratio).sqrt().clamp(max=1.0)
        cx = (2 * u[:, 2] - 1) * (1 - w)  # window centre in [-1, 1] coordinates, inside the image
        cy = (2 * u[:, 3] - 1) * (1 - h)
        theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, cx, h, cy
        grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def colour_jitter(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """Brightness, contrast, saturation and hue with independent factors per image, applied
        to the images picked with probability ``jitter_p`` (the others pass unchanged)."""
        b, c = x.shape[:2]
        dev = x.device
        s = self.jitter_strength
        u = self._rand((b, 5), generator, dev)
        pick = (u[:, 0] < self.jitter_p)[:, None, None, None]
        factors = 1 - s + 2 * s * u[:, 1:4]  # brightness, contrast, saturation in [1-s, 1+s]
        view = lambda t: t[:, None, None, None]  # noqa: E731
        y = x * view(factors[:, 0])
        gray = TF.rgb_to_grayscale(y) if c == 3 else y
        mean = gray.mean(dim=(1, 2, 3), keepdim=True)
        y = view(factors[:, 1]) * y + (1 - view(factors[:, 1])) * mean
        if c == 3:
            gray = TF.rgb_to_grayscale(y, num_output_channels=3)
            y = view(factors[:, 2]) * y + (1 - view(factors[:, 2])) * gray
            theta = (u[:, 4] - 0.5) * (s / 2) * 2 * math.pi  # hue in [-s/4, s/4] turns
            cos, sin = torch.cos(theta), torch.sin(theta)
            rot = torch.zeros(b, 3, 3, device=dev)
            rot[:, 0, 0] = 1
            rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
            m = _YIQ2RGB.to(dev) @ rot @ _RGB2YIQ.to(dev)  # (B, 3, 3)
            y = torch.einsum("bij,bjhw->bihw", m, y)
        return torch.where(pick, y.clamp(0, 1), x)


def augment_for(name: str, channels: int, cfg) -> ImageAugment:
    """The Table 9 augmentation for data set ``name`` from a :class:`DataConfig`."""
    flip = str(cfg.hflip).lower()
    hflip = name.startswith("cifar") if flip == "auto" else flip == "true"
    return ImageAugment(
        crop_pad=cfg.crop_pad,
        crop_scale=cfg.crop_scale,
        hflip=hflip,
        jitter_p=cfg.jitter_p,
        jitter_strength=cfg.jitter_strength,
        gray_p=cfg.gray_p if channels == 3 else 0.0,
        noise=cfg.aug_noise,
    )
