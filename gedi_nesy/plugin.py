"""GEDI inside DeepProbLog's own training: ``GEDILoss`` and a drop-in ``train_model``.

A DeepProbLog script keeps its ``Model``, its network module and optimizer, its ``DataLoader`` of
``Query`` objects, ``get_confusion_matrix`` and its engine; the port changes three lines::

    from gedi_nesy import BatchedEngine, gedi_network, train_model   # was: from deepproblog.train import train_model
    net = gedi_network(network, "mnist_net", batching=True)          # was: Network(network, "mnist_net", batching=True)
    model.set_engine(BatchedEngine(model), cache=True)                # was: ExactEngine(model) (optional)

``train_model`` is DeepProbLog's (same arguments, same returned ``TrainObject`` and logger) with
the GEDI terms added on each batch's images: DeepProbLog back-propagates ``L_NESY`` query by query
as always, then the images each GEDI network saw in the batch go through it once more and
``w_gen L_GEN + w_inv L_INV + w_prior L_PRIOR`` is back-propagated before the optimizer step.
The loss DeepProbLog logs and prints stays its own ``L_NESY``; the GEDI terms are logged beside it
(``gedi_gen``, ``gedi_prior``, ...) and kept in ``train.gedi_terms``.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

import torch

from gedi_core.config import SGLDConfig
from gedi_core.data.base import gaussian_noise
from gedi_core.errors import GediError
from gedi_core.objective import GEDILoss as CoreGEDILoss
from gedi_nesy.config import NesyDataConfig, NesyWeights, plugin_sgld
from gedi_nesy.renaming import DEFAULT_QUERIES, Renamer
from gedi_nesy.restarts import lowest, network_weights, reinitialize, restore_weights, training_nesy
from gedi_nesy.step import batch_inputs, forward_batch, gedi_networks, gedi_terms

# the images over which the plugin's L_PRIOR estimates the class marginal (GEDILoss(prior_window=...)):
# DeepProbLog's scripts train with batches of 2 queries, whose few images say little about it
PLUGIN_PRIOR_WINDOW = 64
# L_PRIOR's weight next to DeepProbLog's L_NESY: 1, chosen on the MNIST validation split with
# DeepProbLog's own script (docs/trials/nesy.md, "2026-12-01: DeepProbLog's own script"); the CLI's 25
# (batches of 60, hundreds of epochs) makes DeepProbLog's one epoch of batches of 2 collapse
PLUGIN_PRIOR_WEIGHT = 1.0


def GEDILoss(gen: float = NesyWeights.gen, inv: float = NesyWeights.inv, prior: float = PLUGIN_PRIOR_WEIGHT,  # noqa: N802
             *, prior_form: str = "entropy", sgld: SGLDConfig | None = None,
             aug_noise: float = NesyDataConfig.aug_noise, seed: int = 0,
             prior_window: float = PLUGIN_PRIOR_WINDOW, **kwargs: Any) -> CoreGEDILoss:
    """The one GEDI objective, :class:`gedi_core.objective.GEDILoss`, configured with the plugin's
    defaults for DeepProbLog's loop (a factory under the class's name, as DeepProbLog scripts write
    it: ``GEDILoss(gen=0.1)``; what it returns is the core class itself).

    ``GEDILoss()`` = ``0.04 L_GEN + 1 L_PRIOR`` (entropy form, paper appendix O) relative to
    DeepProbLog's ``L_NESY``, no ``L_INV`` (set ``inv`` > 0 to add it, with Gaussian noise of sigma
    ``aug_noise`` as the augmentation). Two defaults make it work at any batch size, DeepProbLog's
    batch of 2 included: the class marginal of ``L_PRIOR`` is estimated over the last
    ``prior_window`` images (64; a batch of 64 images or more is its own estimate); SGLD
    (:func:`plugin_sgld`) draws a fixed number of chains per step, whatever the batch size. ``train_model`` sets the prior to the
    class marginal the training queries imply (:func:`program_prior`) unless one is given.
    ``**kwargs``: the core class's other arguments (``prior_target``, ``augment``, ``generator``)."""
    kwargs.setdefault("augment", gaussian_noise(aug_noise))
    return CoreGEDILoss(gen, inv, prior, prior_form=prior_form, sgld=sgld if sgld is not None else plugin_sgld(),
                        seed=seed, prior_window=prior_window, **kwargs)


def _train_object_class():
    from deepproblog.train import TrainObject

    return TrainObject


class GEDITrainObject(_train_object_class()):
    """DeepProbLog's ``TrainObject`` that also back-propagates the GEDI terms of each batch.

    ``gedi``: one objective for every GEDI network of the model (copied per network, each keeps
    its own replay buffer), or a mapping from network name to objective. ``gedi_terms`` holds the
    mean of each term over the batches so far (``reset_gedi_terms()`` starts again); the logger
    gets each term's mean over the last ``log_iter`` batches as ``gedi_<term>``."""

    def __init__(self, model, gedi: CoreGEDILoss | Mapping[str, CoreGEDILoss]) -> None:
        super().__init__(model)
        nets = gedi_networks(model)
        if not nets:
            raise GediError("train_model(..., gedi=...): the model has no GEDI network (use gedi_nesy.gedi_network)")
        if isinstance(gedi, CoreGEDILoss):
            first = next(iter(nets))
            self.objectives = {n: gedi if n == first else copy.deepcopy(gedi) for n in nets}
        elif isinstance(gedi, Mapping):
            missing = [n for n in nets if n not in gedi]
            if missing:
                raise GediError(f"train_model(..., gedi={{...}}): no objective for network(s) {', '.join(missing)}")
            self.objectives = dict(gedi)
        else:
            raise GediError(f"train_model(..., gedi=...): expected a GEDILoss or a mapping of network name to "
                            f"GEDILoss, got {type(gedi).__name__}")
        self.gedi_terms: dict[str, float] = {}
        self.renamings: list = []  # (iteration, gedi_nesy.renaming.Renaming) of each renaming applied
        self._gedi_batches = 0
        self._window: dict[str, float] = {}  # sums of each term since the last log line
        self._window_batches = 0

    def reset_gedi_terms(self) -> None:
        self.gedi_terms, self._gedi_batches = {}, 0

    def _add_gedi(self, batch) -> None:
        """Back-propagate the GEDI terms of ``batch`` and record their values."""
        fwd = forward_batch(self.model, batch_inputs(self.model, batch), fill_cache=False)
        weighted, terms = gedi_terms(gedi_networks(self.model), self.objectives, fwd)
        if weighted:
            sum(weighted).backward()
        self._gedi_batches += 1
        self._window_batches += 1
        n = self._gedi_batches
        for k, v in terms.items():
            v = float(v.detach())
            self.gedi_terms[k] = self.gedi_terms.get(k, 0.0) + (v - self.gedi_terms.get(k, 0.0)) / n
            self._window[k] = self._window.get(k, 0.0) + v

    def get_loss(self, batch, backpropagate_loss: Callable) -> float:
        loss = super().get_loss(batch, backpropagate_loss)
        self._add_gedi(batch)
        return loss

    def get_loss_with_negatives(self, batch, backpropagate_loss: Callable) -> float:
        loss = super().get_loss_with_negatives(batch, backpropagate_loss)
        self._add_gedi(batch)
        return loss

    def log(self, snapshot_iter=None, log_iter=100, test_iter=1000, verbose=1, **kwargs) -> None:
        """DeepProbLog's log line (its ``L_NESY``), then the GEDI terms' means over the same iterations."""
        super().log(snapshot_iter=snapshot_iter, log_iter=log_iter, test_iter=test_iter, verbose=verbose, **kwargs)
        if verbose and self.i % log_iter == 0 and self._window_batches:
            means = {k: v / self._window_batches for k, v in self._window.items()}
            for k, v in means.items():
                self.logger.log(f"gedi_{k}", self.i, v)
            print("\tGEDI terms: " + "\t".join(f"{k}: {v:.4f}" for k, v in means.items()))
            self._window, self._window_batches = {}, 0


def loader_queries(loader) -> list:
    """The queries of a DeepProbLog ``DataLoader`` (its dataset's ``to_queries()``), or []."""
    queries = getattr(loader, "dataset", None)  # DeepProbLog's DataLoader keeps its queries there
    queries = queries.to_queries() if hasattr(queries, "to_queries") else queries
    return list(queries) if queries else []


def default_objective(model, loader, seed: int = 0, **kwargs: Any) -> CoreGEDILoss | dict[str, CoreGEDILoss]:
    """:func:`GEDILoss` (``**kwargs``: its arguments) with the class prior the loader's queries imply
    (:func:`program_prior`), for each GEDI network of ``model``."""
    from gedi_nesy.prior import program_prior

    queries = loader_queries(loader)
    nets = gedi_networks(model)
    if not queries or not nets:
        return GEDILoss(seed=seed, **kwargs)
    priors = program_prior(model, queries)
    objectives = {n: GEDILoss(seed=seed + i, prior_target=priors[n], **kwargs) for i, n in enumerate(nets)}
    return objectives if len(objectives) > 1 else next(iter(objectives.values()))


def renaming_hook(train_object: GEDITrainObject, queries: list, subset: int = DEFAULT_QUERIES,
                  seed: int = 0) -> Callable[[Any], None]:
    """A DeepProbLog training hook (``TrainObject.hooks``: called after the optimizer step) that
    renames the GEDI networks' classes where that lowers ``L_NESY`` on a fixed subset of the
    training queries (:mod:`gedi_nesy.renaming`); each renaming is printed and kept in
    ``train_object.renamings`` as ``(iteration, Renaming)``."""
    renamer = Renamer(train_object.model, queries, subset, seed=seed)
    optimizers = {n: [net.optimizer] for n, net in gedi_networks(train_object.model).items()
                  if getattr(net, "optimizer", None) is not None}

    def hook(t) -> None:
        for r in renamer(optimizers, t.objectives):
            t.renamings.append((t.i, r))
            print(f"\tIteration {t.i}: {r.describe()}")

    return hook


def train_model(model, loader, stop_condition, gedi: CoreGEDILoss | Mapping[str, CoreGEDILoss] | bool | None = None,
                rename_every: int = 0, restarts: int = 0, restart_above: float = 0.5, **kwargs: Any):
    """``deepproblog.train.train_model`` with the GEDI terms added on each batch's images.

    Same arguments (``loader``: a DeepProbLog ``DataLoader``; ``stop_condition``: epochs or a
    ``StopCondition``; ``**kwargs``: ``log_iter``, ``test``, ``with_negatives``, ...) and the same
    returned ``TrainObject`` (with its ``logger``). ``gedi``: the objective; ``None`` (default):
    :func:`GEDILoss` with the class prior the loader's queries imply; ``False``: no GEDI terms
    (DeepProbLog's own training).

    ``rename_every``: iterations between searches for a renaming of each GEDI network's classes
    that lowers ``L_NESY`` on a subset of the training queries (:mod:`gedi_nesy.renaming`, the
    label-free repair of wrongly named digits), and once more after the last iteration; 0
    (default): never. A search scores a few hundred candidate namings: milliseconds each with the
    batched engine, seconds each with DeepProbLog's ``ExactEngine``. Off by default: in
    DeepProbLog's own script (one epoch, batch 2) it changed nothing on the validation pool.

    ``restarts``: while the training ``L_NESY`` after training (:func:`training_nesy`) is above
    ``restart_above``, draw the GEDI networks afresh (their optimizers' state cleared, the
    objectives as given) and train again, up to ``restarts`` times; the start with the lowest
    is kept (every network's weights as that start ended, its ``TrainObject`` returned, with
    ``starts``: each start's training ``L_NESY``)."""
    if gedi is False:
        from deepproblog.train import train_model as deepproblog_train_model

        return deepproblog_train_model(model, loader, stop_condition, **kwargs)
    if gedi is None or gedi is True:
        gedi = default_objective(model, loader)
    if not (isinstance(rename_every, int) and rename_every >= 0):
        raise GediError(f"train_model: rename_every must be a number of iterations >= 0 (0: off), got {rename_every!r}")
    if not (isinstance(restarts, int) and restarts >= 0):
        raise GediError(f"train_model: restarts must be a whole number >= 0, got {restarts!r}")
    queries = loader_queries(loader)
    if restarts and not queries:
        raise GediError("train_model: restarts need the loader's queries (a DeepProbLog DataLoader over a Dataset)")
    fresh = copy.deepcopy(gedi) if restarts else gedi
    starts: list[tuple[float, GEDITrainObject, dict]] = []
    base = torch.initial_seed()  # the script's torch.manual_seed: each script seed draws its own restarts
    for k in range(restarts + 1):
        if k:
            reinitialize(model, (base + 1000 * k) % 2**63)
            for net in gedi_networks(model).values():
                if getattr(net, "optimizer", None) is not None:
                    net.optimizer.state.clear()
        train_object = train_once(model, loader, stop_condition, copy.deepcopy(fresh) if k else gedi,
                                  rename_every, queries, **kwargs)
        if not restarts:
            return train_object
        loss = training_nesy(model, queries)
        starts.append((loss, train_object, network_weights(model)))
        print(f"\tStart {k}: training L_NESY {loss:.4f}" + (" (above %g: restart)" % restart_above
                                                          if loss > restart_above and k < restarts else ""))
        if not loss > restart_above:
            break
    best = lowest([loss for loss, _, _ in starts])
    restore_weights(model, starts[best][2])
    chosen = starts[best][1]
    chosen.starts = [loss for loss, _, _ in starts]
    return chosen


def train_once(model, loader, stop_condition, gedi, rename_every: int, queries: list, **kwargs: Any):
    """One start of :func:`train_model`: DeepProbLog's training loop with the GEDI terms and the
    renaming hook."""
    train_object = GEDITrainObject(model, gedi)
    hook = None
    if rename_every and queries:
        hook = renaming_hook(train_object, queries)
        train_object.hooks.append((rename_every, hook))
    train_object.train(loader, stop_condition, **kwargs)
    if hook is not None and train_object.i % rename_every:  # the last iterations are searched too
        hook(train_object)
    return train_object
