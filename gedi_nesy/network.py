"""A GEDI model as a DeepProbLog neural predicate.

``gedi_network("gedi_net")`` returns a :class:`deepproblog.network.Network` whose module maps a
batch of images to ``p(y|x)`` (the program's probabilities), while the same GEDI model gives
logits and energies to the GEDI terms. Programs use it as
``nn(gedi_net, [X], Y, [0,1,2,3,4,5,6,7,8,9]) :: digit(X, Y).``
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gedi_core.config import ModelConfig
from gedi_core.errors import GediError
from gedi_core.models import GEDIModel, build_model
from gedi_nesy.config import lenet_config


class GEDINetwork(nn.Module):
    """Wraps a :class:`GEDIModel`: ``forward`` gives probabilities for DeepProbLog.

    Accepts a batch ``(B, C, H, W)`` (DeepProbLog's ``batching=True``) or one image
    ``(C, H, W)`` (``batching=False``), returning ``(B, K)`` or ``(K,)``. ``logits`` and
    ``energy`` are the GEDI views of the same network."""

    def __init__(self, gedi: GEDIModel) -> None:
        super().__init__()
        self.gedi = gedi

    @property
    def num_clusters(self) -> int:
        return self.gedi.num_clusters

    def logits(self, x: Tensor) -> Tensor:
        return self.gedi(x)

    def energy(self, x: Tensor) -> Tensor:
        return self.gedi.energy(x)

    def forward(self, x: Tensor) -> Tensor:
        single = x.dim() == 3
        probs = F.softmax(self.gedi(x.unsqueeze(0) if single else x), dim=-1)
        return probs[0] if single else probs


def gedi_network(
    name: str = "gedi_net",
    model: ModelConfig | GEDIModel | None = None,
    input_shape: Sequence[int] = (1, 28, 28),
    batching: bool = True,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
):
    """A DeepProbLog ``Network`` named ``name`` around a GEDI model.

    ``model``: a :class:`GEDIModel`, or a :class:`ModelConfig` to build one for inputs of
    ``input_shape`` (default: the NeSy recipe's LeNet over 10 classes, tau 0.1, for 28x28
    images in ``[-1, 1]``). ``optimizer``: the network's optimizer for DeepProbLog's own
    ``train_model`` (default: Adam with ``lr`` and ``weight_decay``, the NeSy recipe)."""
    from deepproblog.network import Network

    if not name or not name.replace("_", "a").isalnum() or not name[0].islower():
        raise GediError(f"network name '{name}' must be a ProbLog atom (lower-case letter, then letters, digits, _)")
    cfg = lenet_config() if model is None else model
    gedi = build_model(tuple(input_shape), cfg) if isinstance(cfg, ModelConfig) else cfg
    module = GEDINetwork(gedi)
    if optimizer is None:
        optimizer = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    return Network(module, name, optimizer=optimizer, batching=batching)
