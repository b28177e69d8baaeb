"""Data sets by name: the toy sets (moons, circles) and the image sets (svhn, cifar10,
cifar100, mnist, fashion-mnist, mnist-t10k); each loader returns a :class:`DataBundle`."""

from __future__ import annotations

from gedi_core.data.vision import loaders as vision_loaders
from gedi_core.data.base import Augment, DataBundle, gaussian_noise
from gedi_core.data.registry import DATASETS, Loader, load_dataset, register_dataset
from gedi_core.data.toy import load_circles, load_moons

register_dataset("moons", load_moons)
register_dataset("circles", load_circles)
for _name, _loader in vision_loaders().items():
    register_dataset(_name, _loader)

__all__ = ["Augment", "DATASETS", "DataBundle", "Loader", "gaussian_noise", "load_dataset", "register_dataset"]
