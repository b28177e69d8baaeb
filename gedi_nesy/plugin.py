"""GEDI inside DeepProbLog's own training: ``GEDILoss`` and a drop-in ``train_model``.

A DeepProbLog script keeps its ``Model``, ``Network``, ``DataLoader`` of ``Query`` objects,
``get_confusion_matrix`` and engine; three lines change::

    from gedi_nesy import BatchedEngine, GEDILoss, gedi_network, train_model
    net = gedi_network("mnist_net")                  # instead of Network(MNIST_Net(), ...)
    model.set_engine(BatchedEngine(model), cache=True)   # instead of ExactEngine(model)
    train = train_model(model, loader, 1, gedi=GEDILoss(), log_iter=100)

``train_model`` is DeepProbLog's (same arguments, same returned ``TrainObject`` and logger) with
the GEDI terms added on each batch's images: DeepProbLog back-propagates ``L_NESY`` query by query
as always, then the images each GEDI network saw in the batch go through it once more and
``w_gen L_GEN + w_inv L_INV + w_prior L_PRIOR`` is back-propagated before the optimizer step.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

from gedi_core.config import SGLDConfig
from gedi_core.data.base import gaussian_noise
from gedi_core.errors import GediError
from gedi_core.objective import GEDILoss as CoreGEDILoss
from gedi_nesy.config import NesyDataConfig, NesyWeights, nesy_sgld
from gedi_nesy.step import batch_inputs, forward_batch, gedi_networks, gedi_terms


class GEDILoss(CoreGEDILoss):
    """:class:`gedi_core.objective.GEDILoss` with the NeSy recipe as its defaults.

    ``GEDILoss()`` = ``0.04 L_GEN + 25 L_PRIOR`` (entropy form, paper appendix O), no ``L_INV``
    (set ``inv`` > 0 to add it, with Gaussian noise of sigma ``aug_noise`` as the augmentation),
    SGLD from :func:`nesy_sgld` (the paper's: one chain per image on every step, whatever the batch
    size); for batches of ~60 queries, ``sgld=nesy_fast_sgld()`` (gedi-nesy's recipe: 60 chains
    every 2nd step) is 3.3-3.7x faster at the same accuracy (see gedi_nesy.config). The weights
    are relative to DeepProbLog's ``L_NESY`` (weight 1)."""

    def __init__(self, gen: float = NesyWeights.gen, inv: float = NesyWeights.inv, prior: float = NesyWeights.prior,
                 *, prior_form: str = "entropy", sgld: SGLDConfig | None = None,
                 aug_noise: float = NesyDataConfig.aug_noise, seed: int = 0, **kwargs: Any) -> None:
        kwargs.setdefault("augment", gaussian_noise(aug_noise))
        super().__init__(gen, inv, prior, prior_form=prior_form, sgld=sgld if sgld is not None else nesy_sgld(),
                         seed=seed, **kwargs)


def _train_object_class():
    from deepproblog.train import TrainObject

    return TrainObject


class GEDITrainObject(_train_object_class()):
    """DeepProbLog's ``TrainObject`` whose per-batch loss also holds the GEDI terms.

    ``gedi``: one objective for every GEDI network of the model (copied per network, each keeps
    its own replay buffer), or a mapping from network name to objective. ``gedi_terms`` holds the
    mean of each term over the batches so far (``reset_gedi_terms()`` starts again)."""

    def __init__(self, model, gedi: CoreGEDILoss | Mapping[str, CoreGEDILoss]) -> None:
        super().__init__(model)
        nets = gedi_networks(model)
        if not nets:
            raise GediError("train_model(..., gedi=...): the model has no GEDI network (use gedi_nesy.gedi_network)")
        if isinstance(gedi, CoreGEDILoss):
            first = next(iter(nets))
            self.objectives = {n: gedi if n == first else copy.deepcopy(gedi) for n in nets}
        else:
            missing = [n for n in nets if n not in gedi]
            if missing:
                raise GediError(f"train_model(..., gedi={{...}}): no objective for network(s) {', '.join(missing)}")
            self.objectives = dict(gedi)
        self.gedi_terms: dict[str, float] = {}
        self._gedi_batches = 0

    def reset_gedi_terms(self) -> None:
        self.gedi_terms, self._gedi_batches = {}, 0

    def _add_gedi(self, batch, nesy_loss: float) -> float:
        """Back-propagate the GEDI terms of ``batch``; the batch's total loss."""
        fwd = forward_batch(self.model, batch_inputs(self.model, batch), fill_cache=False)
        weighted, terms = gedi_terms(gedi_networks(self.model), self.objectives, fwd)
        total = 0.0
        if weighted:
            loss = sum(weighted)
            loss.backward()
            total = float(loss.detach())
        self._gedi_batches += 1
        n = self._gedi_batches
        for k, v in terms.items():
            self.gedi_terms[k] = self.gedi_terms.get(k, 0.0) + (float(v.detach()) - self.gedi_terms.get(k, 0.0)) / n
        return nesy_loss + total

    def get_loss(self, batch, backpropagate_loss: Callable) -> float:
        return self._add_gedi(batch, super().get_loss(batch, backpropagate_loss))

    def get_loss_with_negatives(self, batch, backpropagate_loss: Callable) -> float:
        return self._add_gedi(batch, super().get_loss_with_negatives(batch, backpropagate_loss))


def train_model(model, loader, stop_condition, gedi: CoreGEDILoss | Mapping[str, CoreGEDILoss] | None = None,
                **kwargs: Any):
    """``deepproblog.train.train_model`` with the GEDI terms added on each batch's images.

    Same arguments (``loader``: a DeepProbLog ``DataLoader``; ``stop_condition``: epochs or a
    ``StopCondition``; ``**kwargs``: ``log_iter``, ``test``, ``with_negatives``, ...) and the same
    returned ``TrainObject`` (with its ``logger``). ``gedi``: the objective (default
    :class:`GEDILoss`, the NeSy recipe)."""
    train_object = GEDITrainObject(model, gedi if gedi is not None else GEDILoss())
    train_object.train(loader, stop_condition, **kwargs)
    return train_object
