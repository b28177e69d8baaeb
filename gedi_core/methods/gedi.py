"""GEDI and its ablations: ``w_gen L_GEN + w_inv L_INV + w_prior L_PRIOR`` (:class:`GEDILoss`)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from gedi_core.config import TrainConfig
from gedi_core.data.base import Augment
from gedi_core.methods.base import Method, register
from gedi_core.objective import GEDILoss


class GEDI(Method):
    """The full objective; a zero weight skips a term and its cost (no SGLD when ``w_gen = 0``)."""

    def __init__(self, cfg: TrainConfig, input_shape: tuple[int, ...], augment: Augment, name: str = "gedi") -> None:
        super().__init__(cfg, input_shape, augment, name)
        w = cfg.weights
        self.objective = GEDILoss(w.gen, w.inv, w.prior, prior_form="uniform", sgld=cfg.sgld, augment=augment,
                                  seed=cfg.seed + 2, generator=self.generator)

    def training_step(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        loss, terms = self.objective(self.model, x, self.model(x))
        return loss, {k: float(v.detach()) for k, v in terms.items()}

    def replay_buffer(self) -> Tensor | None:
        return self.objective.buffer_samples()

    def extra_state(self) -> dict[str, Any]:
        return {"objective": self.objective.get_extra_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "objective" in state:
            self.objective.set_extra_state(state["objective"])


register("gedi", GEDI, summary="GEDI: L_GEN + L_INV + L_PRIOR")
register("gedi_no_gen", GEDI, {"weights": {"gen": 0.0}}, {"gen"}, "GEDI without the generative term")
register("gedi_no_inv", GEDI, {"weights": {"inv": 0.0}}, {"inv"}, "GEDI without the invariance term")
register("gedi_no_prior", GEDI, {"weights": {"prior": 0.0}}, {"prior"}, "GEDI without the prior term")
