"""A small supervised classifier as the feature extractor of FID where Inception is not at hand.

FID compares the Gaussian statistics of two image sets in some feature space; the paper uses
Inception-v3 (ImageNet). Offline, or for 28x28 grey images, the penultimate layer of a small
CNN trained with labels on the *training* split is a common stand-in (as in "FID with a
domain classifier"): it sees what separates the classes of this data set. Its numbers are
comparable only with FIDs computed with the same extractor file.

``train_feature_classifier`` returns a module with the contract of :mod:`gedi_core.evaluation.fid`:
float images in ``[0, 1]`` of shape (N, 3, H, W) -> (N, d) features; ``save_feature_classifier``
writes it as TorchScript, the form ``--fid-features FILE.pt`` loads.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gedi_core.runfolder import atomic_path, check_output_file


class FeatureClassifier(nn.Module):
    """Two conv blocks, a 128-d feature layer and a linear classifier; ``forward`` gives the features."""

    def __init__(self, in_channels: int, num_classes: int, feature_dim: int = 128) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64 * 16, feature_dim), nn.ReLU(),
        )
        self.classifier = nn.Linear(feature_dim, num_classes)

    def features_of(self, x: Tensor) -> Tensor:
        """Features of images in the training range ``[-1, 1]`` with ``in_channels`` channels."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """FID contract: (N, 3, H, W) in ``[0, 1]`` -> (N, d); grey models average the three channels."""
        if self.in_channels == 1:
            x = x.mean(dim=1, keepdim=True)
        return self.features_of(x * 2 - 1)


def train_feature_classifier(train_x: Tensor, train_y: Tensor, epochs: int = 2, batch_size: int = 128,
                             lr: float = 1e-3, seed: int = 0) -> FeatureClassifier:
    """Train a :class:`FeatureClassifier` with cross-entropy on ``train_x`` (N, C, H, W) in ``[-1, 1]``."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = FeatureClassifier(train_x.shape[1], int(train_y.max()) + 1)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(train_x), generator=gen).split(batch_size):
            loss = F.cross_entropy(net.classifier(net.features_of(train_x[idx].float())), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def classifier_accuracy(net: FeatureClassifier, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Share of ``x`` (in ``[-1, 1]``) the classifier labels correctly."""
    pred = torch.cat([net.classifier(net.features_of(c.float())).argmax(-1) for c in x.split(batch_size)])
    return float((pred == y).float().mean())


def save_feature_classifier(net: FeatureClassifier, path: str | Path, image_size: tuple[int, int]) -> Path:
    """Write the FID feature extractor as TorchScript (traced on a (2, 3, H, W) input), atomically."""
    path = Path(path)
    with warnings.catch_warnings():  # torch >= 2.5 marks TorchScript deprecated; --fid-features reads it
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        traced = torch.jit.trace(net.eval(), torch.rand(2, 3, *image_size))
        with atomic_path(path) as tmp:
            torch.jit.save(traced, str(tmp))
    return path


def build_feature_extractor(data, out: str | Path, epochs: int = 2, seed: int = 0) -> dict:
    """Train the FID feature extractor on ``data`` (a :class:`~gedi_core.data.DataBundle` of
    images: its training split), write it as TorchScript to ``out`` and return what was written,
    with the classifier's accuracy on the bundle's held-out split (test, or validation)."""
    net = train_feature_classifier(data.train_x, data.train_y, epochs=epochs, seed=seed)
    acc = classifier_accuracy(net, data.test_x, data.test_y)
    save_feature_classifier(net, out, tuple(data.input_shape[-2:]))
    return {"out": str(out), "dataset": data.name, "train_images": len(data.train_x), "epochs": epochs,
            "seed": seed, "held_out_acc": acc, "evaluated_on": data.evaluated_on,
            "feature_dim": net.classifier.in_features}


def feature_extractor_file(dataset: str, out: str | Path, data_root: str | None = None, download: bool = False,
                           train_subset: int = 0, test_subset: int = 0, epochs: int = 2, seed: int = 0) -> dict:
    """``gedi-core fid-features``: :func:`build_feature_extractor` for image data set ``dataset``
    (read as ``gedi-core train`` reads it), written to ``out``, a path that must not exist yet
    (refused before any image is read, as are a non-image data set and ``epochs`` < 1)."""
    from gedi_core.config import DataConfig
    from gedi_core.data import load_dataset
    from gedi_core.data.vision import SPECS, is_image_dataset
    from gedi_core.errors import GediError

    if not is_image_dataset(dataset):
        raise GediError(f"--dataset {dataset}: not an image data set (known: {', '.join(SPECS)})")
    if epochs < 1 or train_subset < 0 or test_subset < 0:
        raise GediError(f"--epochs must be >= 1 and --train-subset/--test-subset >= 0, got {epochs}, "
                        f"{train_subset}, {test_subset}")
    out = check_output_file(out)
    cfg = DataConfig(name=dataset, data_root=data_root, download=download, train_subset=train_subset,
                     test_subset=test_subset)
    return build_feature_extractor(load_dataset(cfg, seed), out, epochs=epochs, seed=seed)
