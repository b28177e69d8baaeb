"""A GEDI model as a DeepProbLog neural predicate.

``gedi_network("gedi_net")`` returns a :class:`deepproblog.network.Network` whose module maps a
batch of images to ``p(y|x)`` (the program's probabilities), while the same GEDI model gives
logits and energies to the GEDI terms. Programs use it as
``nn(gedi_net, [X], Y, [0,1,2,3,4,5,6,7,8,9]) :: digit(X, Y).``

``gedi_network(MNIST_Net(), "mnist_net", batching=True)`` takes DeepProbLog's ``Network``
arguments instead: the user's own classifier becomes the GEDI network in place (its last
``nn.Linear`` is read as the cluster head, see :class:`GEDIHeadNetwork`), with no new
parameters, so an optimizer the script builds over the module's parameters still trains all of it.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gedi_core.config import ModelConfig
from gedi_core.errors import GediError
from gedi_core.models import GEDIModel, build_model, cosine_logits, energy_from_logits
from gedi_nesy.defaults import lenet_config

# Adam's learning rate of gedi_network's default optimizer: DeepProbLog's own examples' (its
# MNIST-addition script uses Adam 1e-3); the CLI sets its own (NesyConfig.lr)
DEFAULT_LR = 1e-3


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

    @property
    def head_layer(self) -> nn.Linear:
        """The layer whose weight rows are the cluster prototypes ``U``, one row per class."""
        return self.gedi.head

    @property
    def head_weight(self) -> Tensor:
        """The cluster prototypes ``U`` (their device is the network's)."""
        return self.head_layer.weight

    def logits(self, x: Tensor) -> Tensor:
        return self.gedi(x)

    def energy(self, x: Tensor) -> Tensor:
        return self.gedi.energy(x)

    def forward(self, x: Tensor) -> Tensor:
        single = x.dim() == 3
        probs = F.softmax(self.gedi(x.unsqueeze(0) if single else x), dim=-1)
        return probs[0] if single else probs


class GEDIHeadNetwork(GEDINetwork):
    """Any classifier module read as a GEDI network, in place.

    The module's last ``nn.Linear`` (``head``) gives the class scores; here its output becomes
    the GEDI head's ``U^T g / tau`` with ``g`` the layer's input and ``U`` its weight rows, both
    scaled to unit norm (its bias is not used): the scores are bounded by ``1/tau``, which keeps
    the energy ``E(x) = -logsumexp`` of them from diverging under ``L_GEN``. Everything else of
    the module (its layers, its final softmax, its output shape) is its own, so ``forward``
    returns what the module returns (DeepProbLog's probabilities) and no parameter is added."""

    def __init__(self, module: nn.Module, tau: float = 0.1, head: nn.Linear | None = None) -> None:
        nn.Module.__init__(self)
        if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
            raise GediError(f"gedi_network: tau must be a finite number > 0, got {tau!r}")
        linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
        if head is None and not linears:
            raise GediError(f"gedi_network: the module {type(module).__name__} has no nn.Linear layer to read "
                            "as the cluster head; give head=... or use gedi_network(name) for the GEDI LeNet")
        self.module = module
        self.head = head if head is not None else linears[-1]
        self.tau = float(tau)
        self._scores: list[Tensor] = []
        self.head.register_forward_hook(self._cosine_scores)

    def _cosine_scores(self, layer: nn.Linear, inputs: tuple, output: Tensor) -> Tensor:
        scores = cosine_logits(inputs[0], layer.weight, self.tau)
        self._scores.append(scores)
        return scores

    @property
    def num_clusters(self) -> int:
        return int(self.head.out_features)

    @property
    def head_layer(self) -> nn.Linear:
        return self.head

    def logits(self, x: Tensor) -> Tensor:
        self._scores.clear()
        self.module(x)
        if len(self._scores) != 1:
            raise GediError(f"gedi_network: the head layer ran {len(self._scores)} times in one forward pass "
                            "(give the layer that gives the class scores as head=...)")
        return self._scores.pop().reshape(-1, self.num_clusters)

    def energy(self, x: Tensor) -> Tensor:
        return energy_from_logits(self.logits(x))

    def forward(self, x: Tensor) -> Tensor:
        out = self.module(x)
        self._scores.clear()
        return out


def _network_name(name: Any) -> str:
    if not isinstance(name, str) or not name or not name.replace("_", "a").isalnum() or not name[0].islower():
        raise GediError(f"network name '{name}' must be a ProbLog atom (lower-case letter, then letters, digits, _)")
    return name


def gedi_network(
    name: str | nn.Module = "gedi_net",
    model: ModelConfig | GEDIModel | str | None = None,
    input_shape: Sequence[int] = (1, 28, 28),
    batching: bool = True,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = DEFAULT_LR,
    weight_decay: float = 1e-4,
    *,
    tau: float = 0.1,
    head: nn.Linear | None = None,
    **network_kwargs: Any,
):
    """A DeepProbLog ``Network`` around a GEDI model.

    Two forms:

    * ``gedi_network(name, model=None, input_shape=(1, 28, 28), ...)``: a GEDI model built for
      inputs of ``input_shape`` from ``model`` (a :class:`ModelConfig`; default the NeSy LeNet
      over 10 classes, tau 0.1, for 28x28 images in ``[-1, 1]``) or ``model`` itself (a
      :class:`GEDIModel`);
    * ``gedi_network(module, name, ...)``: DeepProbLog's ``Network(module, name, ...)`` with the
      user's classifier ``module`` read as a GEDI network in place (:class:`GEDIHeadNetwork`,
      temperature ``tau``, the cluster head ``head`` or the module's last ``nn.Linear``); keyword
      arguments go to ``Network`` (``k``, ``scheduler``, ...).

    ``optimizer``: the network's optimizer for DeepProbLog's ``train_model`` (default: Adam with
    ``lr``, DeepProbLog's 1e-3, and ``weight_decay``); a script may set ``net.optimizer`` after, as
    DeepProbLog's examples do."""
    from deepproblog.network import Network

    if isinstance(name, nn.Module) and not isinstance(name, GEDIModel):
        module: nn.Module = GEDIHeadNetwork(name, tau=tau, head=head)
        net_name = _network_name(model if model is not None else "gedi_net")
    else:
        if isinstance(name, GEDIModel):
            name, model = (model if model is not None else "gedi_net"), name
        net_name = _network_name(name)
        cfg = lenet_config() if model is None else model
        if isinstance(cfg, ModelConfig):
            gedi = build_model(tuple(input_shape), cfg)
        elif isinstance(cfg, GEDIModel):
            gedi = cfg
        else:
            raise GediError(f"gedi_network: model must be a ModelConfig or a GEDIModel, got {type(cfg).__name__}")
        module = GEDINetwork(gedi)
    if optimizer is None:
        optimizer = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    return Network(module, net_name, optimizer=optimizer, batching=batching, **network_kwargs)


def input_images(model, name: str, inputs: Sequence, args_of: Callable[[Any], list] | None = None) -> Tensor:
    """The images GEDI network ``name`` of DeepProbLog ``model`` gets for its ground input terms
    ``inputs`` (each a one-element list term, the image read from the model's tensor sources),
    stacked on the network's device. ``args_of``: the list term's arguments (default ProbLog's
    ``term2list``; the engine passes its cached one)."""
    from problog.logic import term2list

    args_of = args_of or (lambda term: term2list(term, False))
    module = model.networks[name].network_module
    images = []
    for term in inputs:
        args = args_of(term)
        if len(args) != 1:
            raise GediError(f"network '{name}' is a GEDI network and takes one image, got inputs {term}")
        images.append(model.get_tensor(args[0]))
    return torch.stack(images).to(next(module.parameters()).device)
