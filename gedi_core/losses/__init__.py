"""Loss terms: pure functions of tensors."""

from gedi_core.losses.barlow import barlow_twins_loss
from gedi_core.losses.gedi import (
    batch_mean_probs,
    gen_loss,
    inv_loss,
    prior_at_marginal,
    prior_cross_entropy,
    prior_entropy_loss,
    prior_loss,
    prior_neg_entropy,
    prior_optimum,
    running_marginal,
)
from gedi_core.losses.swav import sinkhorn, swav_loss

__all__ = [
    "barlow_twins_loss",
    "batch_mean_probs",
    "gen_loss",
    "inv_loss",
    "prior_at_marginal",
    "prior_cross_entropy",
    "prior_entropy_loss",
    "prior_loss",
    "prior_neg_entropy",
    "prior_optimum",
    "running_marginal",
    "sinkhorn",
    "swav_loss",
]
