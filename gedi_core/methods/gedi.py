"""GEDI and its ablations: ``w_gen L_GEN + w_inv L_INV + w_prior L_PRIOR``."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from gedi_core.config import TrainConfig
from gedi_core.data.base import Augment
from gedi_core.losses import gen_loss, inv_loss, prior_loss
from gedi_core.methods.base import Method, register
from gedi_core.models import energy_from_logits
from gedi_core.sampling import EnergySampler


class GEDI(Method):
    """The full objective; a zero weight skips a term and its cost (no SGLD when ``w_gen = 0``)."""

    def __init__(self, cfg: TrainConfig, input_shape: tuple[int, ...], augment: Augment, name: str = "gedi") -> None:
        super().__init__(cfg, input_shape, augment, name)
        self.sampler = EnergySampler(cfg.sgld, self.input_shape, seed=cfg.seed + 2) if cfg.weights.gen > 0 else None

    def to(self, *args: Any, **kwargs: Any) -> "GEDI":
        super().to(*args, **kwargs)
        if self.sampler is not None:
            self.sampler.buffer.device = self.device
            self.sampler.buffer.data = self.sampler.buffer.data.to(self.device)
        return self

    def loss_terms(self, x: Tensor) -> dict[str, Tensor]:
        """The unweighted terms that have a non-zero weight."""
        w = self.cfg.weights
        logits = self.model(x)
        terms: dict[str, Tensor] = {}
        if w.gen > 0 and self.sampler is not None:
            samples = self.sampler.draw(self.model.energy, x.shape[0])
            terms["gen"] = gen_loss(energy_from_logits(logits), self.model.energy(samples))
        if w.inv > 0:
            terms["inv"] = inv_loss(logits, self.model(self.augment(x, self.generator)))
        if w.prior > 0:
            terms["prior"] = prior_loss(logits)
        return terms

    def training_step(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        terms = self.loss_terms(x)
        w = self.cfg.weights
        loss = sum(getattr(w, k) * v for k, v in terms.items())
        return loss, {k: float(v.detach()) for k, v in terms.items()}

    def extra_state(self) -> dict[str, Any]:
        return {"buffer": self.sampler.state_dict()} if self.sampler is not None else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.sampler is not None and "buffer" in state:
            self.sampler.load_state_dict(state["buffer"])


register("gedi", GEDI, summary="GEDI: L_GEN + L_INV + L_PRIOR")
register("gedi_no_gen", GEDI, {"weights": {"gen": 0.0}}, {"gen"}, "GEDI without the generative term")
register("gedi_no_inv", GEDI, {"weights": {"inv": 0.0}}, {"inv"}, "GEDI without the invariance term")
register("gedi_no_prior", GEDI, {"weights": {"prior": 0.0}}, {"prior"}, "GEDI without the prior term")
