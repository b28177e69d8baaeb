"""The GEDI objective as a loss module: ``w_gen L_GEN + w_inv L_INV + w_prior L_PRIOR``.

One object owns what the three terms need besides the network: the weights, the SGLD sampler
with its persistent replay buffer (``L_GEN``), the augmentation and its random stream
(``L_INV``) and the form of the prior (``L_PRIOR``). Its ``state_dict()`` holds the buffer and
the generators, so a checkpoint of the objective resumes it exactly. gedi_core's GEDI methods,
gedi_nesy's training step and a user's own loop all use this class::

    gedi = GEDILoss(gen=1.0, inv=50.0, prior=10.0, augment=gaussian_noise(0.03))
    for x, _ in loader:
        logits = net(x)                       # net maps inputs to cluster logits U^T g(x) / tau
        loss, terms = gedi(net, x, logits)    # terms: {"gen": ..., "inv": ..., "prior": ...}
        optimizer.zero_grad(); loss.backward(); optimizer.step()

The network is read as an energy model through its logits: ``E(x) = -logsumexp(logits)``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from gedi_core.config import SGLDConfig
from gedi_core.errors import GediError, NonFiniteError  # NonFiniteError: re-exported here too
from gedi_core.losses import (batch_mean_probs, gen_loss, inv_loss, prior_at_marginal, prior_cross_entropy,
                              prior_entropy_loss, prior_loss, prior_neg_entropy, running_marginal)
from gedi_core.models import energy_from_logits
from gedi_core.sgld import EnergySampler, check_sgld

LogitsFn = Callable[[Tensor], Tensor]
Augment = Callable[[Tensor, "torch.Generator | None"], Tensor]
PRIOR_FORMS = ("uniform", "entropy")
TERMS = ("gen", "inv", "prior")


def weighted_sum(terms: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor | float:
    """``sum_k weights[k] * terms[k]`` in the order of ``terms`` (0 when there are none)."""
    return sum(weights[k] * v for k, v in terms.items())


def check_logits(x: Tensor, logits: Tensor) -> None:
    """``logits`` are ``net(x)``: a 2-d tensor ``(B, K)``, ``B = len(x)``, ``K >= 2``, finite;
    else a :class:`GediError` naming the argument (:class:`NonFiniteError` for NaN/inf)."""
    if not isinstance(x, Tensor) or x.dim() < 1:
        raise GediError(f"GEDILoss: x must be a tensor of inputs (B, ...), got {type(x).__name__}"
                        + (f" of shape {tuple(x.shape)}" if isinstance(x, Tensor) else ""))
    if not isinstance(logits, Tensor):
        raise GediError(f"GEDILoss: logits must be a tensor (B, K), got {type(logits).__name__}")
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise GediError(f"GEDILoss: logits must be 2-d (B, K) with K >= 2 clusters, got shape {tuple(logits.shape)}")
    if logits.shape[0] != x.shape[0]:
        raise GediError(f"GEDILoss: logits has {logits.shape[0]} rows but x has {x.shape[0]} inputs; "
                        "pass logits = net(x)")
    if not bool(torch.isfinite(logits).all()):
        raise NonFiniteError(f"GEDILoss: logits hold {int((~torch.isfinite(logits)).sum())} NaN/inf value(s) "
                             "(the network's outputs are no longer finite: learning rate too large?)")


class GEDILoss(nn.Module):
    """The GEDI terms of a batch of inputs ``x`` and their logits (paper Eqs. 3 and 7).

    - ``L_GEN`` (weight ``gen``): contrastive divergence ``mean E(x) - mean E(x~)`` with ``x~``
      drawn by SGLD (``sgld``) from a persistent replay buffer of the inputs' shape, created on
      the inputs' device at the first call;
    - ``L_INV`` (weight ``inv``): cross-entropy between ``p(y|x')`` and ``p(y|x)`` for
      ``x' = augment(x, generator)``;
    - ``L_PRIOR`` (weight ``prior``): ``prior_form="uniform"``, the cross-entropy between the
      uniform prior and the batch mean of ``p(y|x)`` (optimum ``ln c``), or ``"entropy"``, the
      negative entropy of that mean (optimum ``-ln c``; the paper's NeSy experiments). The prior
      is uniform unless ``prior_target`` (or :meth:`set_prior`) gives another class marginal
      ``pi``: then the cross-entropy with ``pi``, or ``KL(p_bar || pi) - ln c``. With
      ``prior_window = W > 0`` the marginal is estimated over about the last ``W`` inputs
      (:func:`~gedi_core.losses.running_marginal`, kept in the state) and each batch's images get
      their share of the gradient at that estimate (:func:`~gedi_core.losses.prior_at_marginal`),
      for batches too small for their mean to say much about the marginal (0, the default: the
      batch mean, the paper's).

    A zero weight skips a term and its cost (no SGLD when ``gen == 0``). ``seed`` seeds the
    replay buffer; the augmentation draws from ``generator`` (default: its own, seeded
    ``seed + 1``). SGLD's noise comes from torch's global generator.

    Two levers make ``L_GEN`` cheaper (both off by default, the paper's setting):
    ``sgld.chains`` draws that many chains per call instead of one per input, and
    ``sgld.every = k`` runs SGLD only on calls 0, k, 2k, ...; the calls in between re-score the
    samples of the last SGLD run (kept detached) with the current network. The call counter and
    the kept samples are part of the state, so a checkpoint resumes mid-cycle exactly.
    """

    def __init__(
        self,
        gen: float = 1.0,
        inv: float = 50.0,
        prior: float = 10.0,
        *,
        prior_form: str = "uniform",
        prior_target: Tensor | None = None,
        sgld: SGLDConfig | None = None,
        augment: Augment | None = None,
        seed: int = 0,
        generator: torch.Generator | None = None,
        prior_window: float = 0.0,
    ) -> None:
        super().__init__()
        weights = {"gen": float(gen), "inv": float(inv), "prior": float(prior)}
        for name, w in weights.items():
            if not math.isfinite(w) or w < 0:
                raise GediError(f"GEDILoss: weight '{name}' must be a finite number >= 0, got {w}")
        if prior_form not in PRIOR_FORMS:
            raise GediError(f"GEDILoss: prior_form must be one of {', '.join(PRIOR_FORMS)}, got '{prior_form}'")
        if weights["inv"] > 0 and augment is None:
            raise GediError("GEDILoss: L_INV needs an augmentation (augment=...) or weight inv=0")
        if not (isinstance(prior_window, (int, float)) and math.isfinite(prior_window) and prior_window >= 0):
            raise GediError(f"GEDILoss: prior_window must be a finite number >= 0 (inputs), got {prior_window!r}")
        self.weights = weights
        self.prior_form = prior_form
        self.prior_window = float(prior_window)
        self.marginal: Tensor | None = None  # running class marginal (prior_window > 0)
        self.prior_target: Tensor | None = None
        if prior_target is not None:
            self.set_prior(prior_target)
        self.sgld = sgld if sgld is not None else SGLDConfig()
        if weights["gen"] > 0:
            check_sgld(self.sgld, "GEDILoss")
        self.augment = augment
        self.seed = seed
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed + 1)
        self.sampler: EnergySampler | None = None
        self.gen_calls = 0  # calls that computed L_GEN (sgld.every counts these)
        self.kept: Tensor | None = None  # the last SGLD samples (sgld.every > 1)

    def set_prior(self, target: Tensor | None) -> None:
        """The class prior ``pi`` of ``L_PRIOR`` (``None``: uniform): a 1-d tensor of positive
        finite probabilities summing to 1, one per cluster."""
        if target is not None:
            target = torch.as_tensor(target, dtype=torch.float32).detach().cpu()
            if target.dim() != 1 or target.numel() < 2:
                raise GediError(f"GEDILoss: the prior must be a 1-d tensor of >= 2 class probabilities, "
                                f"got shape {tuple(target.shape)}")
            if not bool(torch.isfinite(target).all()) or bool((target <= 0).any()) \
                    or abs(float(target.sum()) - 1.0) > 1e-4:
                raise GediError(f"GEDILoss: the prior must hold positive probabilities summing to 1, "
                                f"got {[round(float(v), 4) for v in target]}")
        self.prior_target = target

    def rename_classes(self, perm: Any) -> None:
        """The network's classes were permuted (new class ``j`` = old class ``perm[j]``): the
        running class marginal follows them. The prior stays: it belongs to the class names.
        Every other part of the objective (the replay buffer, ``L_GEN``, ``L_INV``) does not
        depend on the order of the classes."""
        if self.marginal is not None:
            self.marginal = self.marginal[torch.as_tensor(list(perm), device=self.marginal.device)]

    # ----------------------------------------------------------------------------- sampler
    def sampler_for(self, x: Tensor) -> EnergySampler:
        """The SGLD sampler, its replay buffer made on first use with ``x``'s shape and device."""
        shape = tuple(x.shape[1:])
        if self.sampler is None:
            self.sampler = EnergySampler(self.sgld, shape, seed=self.seed, device=x.device)
        elif self.sampler.buffer.shape != shape:
            raise GediError(f"GEDILoss: inputs of shape {shape}, but the replay buffer holds {self.sampler.buffer.shape}")
        self.sampler.buffer.to(x.device)
        return self.sampler

    def buffer_samples(self) -> Tensor | None:
        """The replay buffer's chains (None before the first SGLD step or without ``L_GEN``)."""
        return self.sampler.buffer.data if self.sampler is not None else None

    def gen_samples(self, net: LogitsFn, x: Tensor) -> Tensor:
        """The samples ``L_GEN`` contrasts with ``x`` on this call (detached): ``sgld.chains``
        fresh SGLD samples (0: ``len(x)``) on every ``sgld.every``-th call, else the kept ones."""
        cfg = self.sgld
        sampler = self.sampler_for(x)
        if cfg.every > 1 and self.kept is not None and self.gen_calls % cfg.every != 0:
            samples = self.kept.to(x.device)
        else:
            n = cfg.chains if cfg.chains > 0 else x.shape[0]
            samples = sampler.draw(lambda s: energy_from_logits(net(s)), n)
            if not bool(torch.isfinite(samples).all()):
                raise NonFiniteError("SGLD samples are not finite (sgld.step_size or sgld.noise too large?)")
            self.kept = samples if cfg.every > 1 else None
        self.gen_calls += 1
        return samples

    # ----------------------------------------------------------------------------- terms
    def terms(self, net: LogitsFn, x: Tensor, logits: Tensor | None = None) -> dict[str, Tensor]:
        """The unweighted terms with a non-zero weight, in the order gen, inv, prior.

        ``net`` maps inputs to cluster logits; ``logits`` are ``net(x)`` if already computed."""
        if logits is None:
            logits = net(x)
        check_logits(x, logits)
        w = self.weights
        out: dict[str, Tensor] = {}
        if w["gen"] > 0:
            samples = self.gen_samples(net, x)
            out["gen"] = gen_loss(energy_from_logits(logits), energy_from_logits(net(samples)))
        if w["inv"] > 0:
            assert self.augment is not None
            out["inv"] = inv_loss(logits, net(self.augment(x, self.generator)))
        if w["prior"] > 0:
            target = self.prior_target
            if target is not None and target.numel() != logits.shape[-1]:
                raise GediError(f"GEDILoss: the prior has {target.numel()} classes, the network {logits.shape[-1]}")
            if self.prior_window > 0:
                p_bar = batch_mean_probs(logits.float())
                self.marginal = running_marginal(self.marginal, p_bar, logits.shape[0], self.prior_window)
                at = prior_neg_entropy if self.prior_form == "entropy" else prior_cross_entropy
                out["prior"] = prior_at_marginal(at, p_bar, self.marginal, target)
            else:
                prior = prior_entropy_loss if self.prior_form == "entropy" else prior_loss
                out["prior"] = prior(logits, target)
        return out

    def forward(self, net: LogitsFn, x: Tensor, logits: Tensor | None = None) -> tuple[Tensor | float, dict[str, Tensor]]:
        """``(w_gen L_GEN + w_inv L_INV + w_prior L_PRIOR, {term: value})``."""
        terms = self.terms(net, x, logits)
        return weighted_sum(terms, self.weights), terms

    def sgld_range(self) -> float:
        """The largest absolute value in the replay buffer (0 before the first SGLD step)."""
        data = self.buffer_samples()
        return float(data.abs().max()) if data is not None and data.numel() else 0.0

    # ----------------------------------------------------------------------------- state
    def get_extra_state(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict() if self.sampler is not None else None,
                "shape": self.sampler.buffer.shape if self.sampler is not None else None,
                "generator": self.generator.get_state(),
                "gen_calls": self.gen_calls,
                "kept": self.kept.cpu() if self.kept is not None else None,
                "prior": self.prior_target,
                "marginal": self.marginal.cpu() if self.marginal is not None else None}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.gen_calls = int(state.get("gen_calls", 0))
        self.kept = state.get("kept")
        if state.get("prior") is not None:
            self.set_prior(state["prior"])
        self.marginal = state.get("marginal")
        if state.get("sampler") is not None:
            if self.sampler is None:
                data = state["sampler"]["data"]
                self.sampler = EnergySampler(self.sgld, tuple(state["shape"]), seed=self.seed, device=data.device)
            self.sampler.load_state_dict(state["sampler"])

    def extra_repr(self) -> str:
        w = ", ".join(f"{k}={v:g}" for k, v in self.weights.items())
        prior = "uniform" if self.prior_target is None else [round(float(v), 3) for v in self.prior_target]
        return f"{w}, prior_form={self.prior_form}, prior={prior}, prior_window={self.prior_window:g}, sgld_steps={self.sgld.steps}, sgld_chains={self.sgld.chains}, " \
               f"sgld_every={self.sgld.every}"
