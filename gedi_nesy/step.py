"""One NeSy training step: DeepProbLog's query probabilities plus the GEDI terms on the same images.

For each batch of queries:

1. the images each GEDI network sees in the batch are read off the compiled circuits and sent
   through the network once, as a batch (with random training shifts when configured);
2. ``L_NESY`` comes from the model's engine: the batched engine reuses those logits, the exact
   engine reads the probabilities put in DeepProbLog's per-network caches;
3. ``L_GEN``, ``L_INV``, ``L_PRIOR`` come from one :class:`~gedi_core.objective.GEDILoss` per
   GEDI network, on the same images and logits;
4. ``loss = w_nesy L_NESY + w_gen L_GEN + w_inv L_INV + w_prior L_PRIOR``.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from gedi_core.data.augment import ImageAugment
from gedi_core.devices import mixed_precision
from gedi_core.errors import GediError
from gedi_core.loop import StepOutput
from gedi_core.monitor import collapse_indicators
from gedi_core.objective import GEDILoss
from gedi_nesy.engine import is_batched
from gedi_nesy.losses import nesy_loss, nesy_loss_log
from gedi_nesy.network import GEDINetwork, input_images


def gedi_networks(model) -> "OrderedDict[str, Any]":
    """The model's networks whose module is a :class:`GEDINetwork` (in registration order)."""
    return OrderedDict((n, net) for n, net in model.networks.items() if isinstance(net.network_module, GEDINetwork))


def batch_inputs(model, batch: Sequence) -> dict[str, list]:
    """For each network, the distinct (ground) input terms its neural predicates get in ``batch``."""
    if is_batched(model):
        return model.solver.batch_inputs(batch)
    per_net: dict[str, list] = {}
    seen: dict[str, set] = {}
    for q in batch:
        ac = model.solver.cache.get(q)
        for net_name, inputs in ac.extract_neural():
            name = str(net_name)
            ground = inputs.apply_term(q.substitution)
            if ground not in seen.setdefault(name, set()):
                seen[name].add(ground)
                per_net.setdefault(name, []).append(ground)
    return per_net


def forward_batch(model, per_net: dict[str, list], fill_cache: bool = True,
                  augment: Callable[[Tensor], Tensor] | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """One batched forward pass per GEDI network; fills DeepProbLog's cache with ``p(y|x)``.

    ``augment`` (training only) maps each network's image batch to the views it sees.
    Returns ``{network: (images, logits)}`` (the images after ``augment``)."""
    out: dict[str, tuple[Tensor, Tensor]] = {}
    nets = gedi_networks(model)
    for name, inputs in per_net.items():
        if name not in nets:
            continue
        net = nets[name]
        x = input_images(model, name, inputs)
        if augment is not None:
            x = augment(x)
        logits = net.network_module.logits(x)
        if fill_cache:
            probs = torch.softmax(logits, dim=-1)
            for j, term in enumerate(inputs):
                net.cache[term] = probs[j]
        out[name] = (x, logits)
    return out


def clear_caches(model) -> None:
    for net in model.networks.values():
        net.cache.clear()


def query_probabilities(model, batch: Sequence) -> list[Tensor | float | None]:
    """``p(q)`` of each query of ``batch`` (None when the query has no proof)."""
    with warnings.catch_warnings():  # DeepProbLog's semiring reads tensors as floats to prune zeros
        warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
        results = model.solve(list(batch))
    out: list[Tensor | float | None] = []
    for r, q in zip(results, batch):
        key = q.substitute().query
        out.append(r.result[key] if key in r.result else None)
    return out


def nesy_step_loss(model, batch: Sequence, fwd: dict[str, tuple[Tensor, Tensor]],
                   per_net: dict[str, list]) -> tuple[Tensor | None, int]:
    """``L_NESY`` of one batch with the model's engine: the batched engine reuses the logits of
    the batch's forward pass (networks run once per batch); the exact engine reads the
    probabilities ``forward_batch`` put in DeepProbLog's network caches."""
    log_probs = {n: torch.log_softmax(logits, dim=-1) for n, (_, logits) in fwd.items()} if is_batched(model) else {}
    return nesy_loss_of_log_probs(model, batch, per_net, log_probs)


def nesy_loss_of_log_probs(model, batch: Sequence, per_net: dict[str, list],
                           log_probs: dict[str, Tensor]) -> tuple[Tensor | None, int]:
    """``L_NESY`` of one batch from each network's ``log p(y|x)`` on its inputs (rows in
    ``per_net``'s order): the batched engine evaluates the circuits on them; DeepProbLog's engines
    read the probabilities in the networks' caches instead (filled by :func:`forward_batch`, or by
    the caller). Returns the loss (None when no query has a proof) and the number skipped."""
    if is_batched(model):
        logp, decided = model.solver.log_probs(batch, {n: (per_net[n], lp) for n, lp in log_probs.items()})
        return nesy_loss_log(logp, decided, batch)
    return nesy_loss(query_probabilities(model, batch), batch)


def query_probs_of_log_probs(model, batch: Sequence, per_net: dict[str, list],
                             log_probs: dict[str, Tensor]) -> list[float | None]:
    """``p(q)`` of each query of ``batch`` from the networks' ``log p(y|x)`` as in
    :func:`nesy_loss_of_log_probs` (no gradient); None for a query without a proof or decided
    without networks."""
    with torch.no_grad():
        if is_batched(model):
            logp, decided = model.solver.log_probs(batch, {n: (per_net[n], lp) for n, lp in log_probs.items()})
            return [None if d else float(lp.exp()) for lp, d in zip(logp, decided)]
        return [float(p) if torch.is_tensor(p) else None for p in query_probabilities(model, batch)]


def gedi_terms(nets: Mapping[str, Any], objectives: Mapping[str, GEDILoss],
               fwd: dict[str, tuple[Tensor, Tensor]]) -> tuple[list[Tensor], dict[str, Tensor]]:
    """Each GEDI network's :class:`GEDILoss` terms on the images and logits of the batch's forward
    pass (``fwd``, from :func:`forward_batch`): ``(each term times its weight, in order; {term:
    unweighted value summed over the networks})``."""
    weighted: list[Tensor] = []
    terms: dict[str, Tensor] = {}
    for name, (x, logits) in fwd.items():
        objective = objectives[name]
        for k, v in objective.terms(nets[name].network_module.logits, x, logits).items():
            terms[k] = terms[k] + v if k in terms else v
            weighted.append(objective.weights[k] * v)
    return weighted, terms


class TrainShift:
    """Random shifts of up to ``pixels`` pixels (reflect-padded crop, one offset per image)
    of the training images the networks see; seeded, its state goes into the checkpoint."""

    def __init__(self, pixels: int, seed: int) -> None:
        self.shift = ImageAugment(crop_pad=pixels, jitter_p=0.0, gray_p=0.0, noise=0.0)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: Tensor) -> Tensor:
        return self.shift(x, self.generator)


class NesyStep:
    """One batch of queries: ``weights['nesy'] L_NESY`` plus each GEDI network's :class:`GEDILoss`.

    ``objectives`` maps every GEDI network of ``model`` to its objective (weights ``gen``,
    ``inv``, ``prior`` live there); ``w_nesy`` weights ``L_NESY`` (0: the GEDI-only arm)."""

    def __init__(self, model, objectives: Mapping[str, GEDILoss], w_nesy: float = 1.0,
                 shift: TrainShift | None = None, amp: bool = False) -> None:
        self.model = model
        self.nets = gedi_networks(model)
        missing = [n for n in self.nets if n not in objectives]
        if missing:
            raise GediError(f"no GEDI objective for network(s) {', '.join(missing)}")
        self.objectives = dict(objectives)
        self.w_nesy = w_nesy
        self.shift = shift
        self.amp = amp
        self.skipped = 0  # queries without a proof (or decided without networks) so far
        self.input_shapes: dict[str, list[int]] = {}  # per network, recorded in checkpoints (for export)
        self._last: tuple[str, Tensor] | None = None  # the first network's images of the last batch

    def __call__(self, batch: Sequence) -> StepOutput:
        model = self.model
        per_net = batch_inputs(model, batch)
        device = next(iter(self.nets.values())).network_module.head_weight.device
        with mixed_precision(self.amp, device):
            fwd = forward_batch(model, per_net, fill_cache=self.w_nesy > 0 and not is_batched(model),
                                augment=self.shift)
        fwd = {n: (x, logits.float()) for n, (x, logits) in fwd.items()}
        terms: dict[str, Tensor] = {}  # unweighted, summed over networks (for the log)
        weighted: list[Tensor] = []  # each term times its weight, summed in this order
        if self.w_nesy > 0:
            lnesy, skipped = nesy_step_loss(model, batch, fwd, per_net)
            self.skipped += skipped
            if lnesy is not None:
                terms["nesy"] = lnesy
                weighted.append(self.w_nesy * lnesy)
        with mixed_precision(self.amp, device):
            gedi_weighted, gedi_found = gedi_terms(self.nets, self.objectives, fwd)
        weighted += gedi_weighted
        terms.update(gedi_found)
        clear_caches(model)
        if fwd:
            name = next(iter(fwd))
            self._last = (name, fwd[name][0].detach())
        loss = sum(weighted)
        return StepOutput(loss if torch.is_tensor(loss) else None, {k: float(v.detach()) for k, v in terms.items()},
                          len(batch))

    def diagnose(self, batch: Sequence) -> dict[str, float]:
        """Collapse indicators of the first GEDI network on the last batch's images (no extra
        randomness: the step's random streams are not touched)."""
        if self._last is None:
            return {}
        name, x = self._last
        diag = collapse_indicators(self.nets[name].network_module.gedi, x)
        diag["sgld_max_abs"] = self.objectives[name].sgld_range()
        return diag

    def train(self, mode: bool = True) -> None:
        for net in self.model.networks.values():
            net.network_module.train(mode)

    def state_dict(self) -> dict[str, Any]:
        return {"model": {"networks": {n: net.network_module.state_dict() for n, net in self.model.networks.items()},
                          "input_shapes": self.input_shapes},
                "local": {"objectives": {n: o.state_dict() for n, o in self.objectives.items()},
                          "shift": self.shift.generator.get_state() if self.shift is not None else None,
                          "skipped": self.skipped,
                          # the prior's weight (ramped by gedi_nesy.start.prior_ramp_hook)
                          "prior_weights": {n: o.weights["prior"] for n, o in self.objectives.items()}}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, net in self.model.networks.items():
            net.network_module.load_state_dict(state["model"]["networks"][name])
        local = state["local"]
        for name, objective in self.objectives.items():
            objective.load_state_dict(local["objectives"][name])
        if self.shift is not None and local.get("shift") is not None:
            self.shift.generator.set_state(local["shift"])
        self.skipped = local["skipped"]
        for name, weight in local.get("prior_weights", {}).items():
            self.objectives[name].weights["prior"] = weight
