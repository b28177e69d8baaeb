"""Failure-mode monitor: distances of the loss terms to their known optima.

The paper notes that the global optima are known: ``L_PRIOR -> ln c`` and ``L_INV -> 0``.
Logging both gaps shows the three failure modes while a run is going:

- cluster collapse: one cluster takes almost all of a batch (``L_PRIOR`` far above ``ln c``), or
  of the final evaluation images far more than its share (:func:`collapse_share_threshold`);
- representation collapse: the embeddings' variance across the batch goes to zero;
- label inconsistency: ``L_INV`` stays far above 0 (the views disagree);
- runaway SGLD chains: the replay buffer leaves the data's range by orders of magnitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gedi_core.losses import inv_loss, prior_entropy_loss, prior_loss
from gedi_core.models import GEDIModel

SHARE_CAP = 0.9  # no threshold goes above this share (two or three clusters); a batch's threshold


def collapse_share_threshold(num_clusters: int, n: int | None = None, expected: float | None = None) -> float:
    """The largest cluster's share of ``n`` predictions above which the clusters have collapsed.

    Three times the largest share the class marginal gives a cluster (``expected``; default the
    uniform ``1/c``), plus four standard deviations of that cluster's share among ``n`` predictions
    drawn from the marginal (so that a small healthy batch does not cross it by chance; ``n=None``:
    no allowance), never above ``SHARE_CAP``. Measured on MNIST addition
    (``experiments/results/nesy_table6_runs.csv``, c = 10, 2000 test images): the largest cluster of
    the 20 runs that did not collapse held 10.7-19.5 % of the images, the collapsed runs 81-100 %;
    for c = 10 the threshold is 33 % of 2000 images and 36 % of 359.

    Meant for the predictions of a trained model. A training batch's argmax shares say less: the
    one-thread demo run (``scripts/demo.sh``), 14 % in its largest cluster of the test images at the
    end, had 57 % of a 120-image batch in one cluster at iteration 200 of 1000, with the batch's mean
    ``p(y|x)`` near uniform (``prior_gap`` 0.02); :class:`FailureMonitor` checks batches against
    ``SHARE_CAP``."""
    p = expected if expected is not None else 1.0 / max(num_clusters, 1)
    allowance = 4.0 * math.sqrt(p * (1.0 - p) / n) if n else 0.0
    return min(SHARE_CAP, 3.0 * p + allowance)


def collapse_message(share: float, n: int | None, num_clusters: int, what: str = "the batch",
                     expected: float | None = None, threshold: float | None = None) -> str | None:
    """``"one cluster takes 81% of <what> ..."`` when ``share`` (the largest cluster's share of
    ``n`` predictions over ``num_clusters`` clusters) reaches ``threshold`` (default
    :func:`collapse_share_threshold`), else ``None`` (never for a single cluster, nor for fewer
    than two predictions per cluster, too few to tell collapse from chance)."""
    if threshold is None:
        threshold = collapse_share_threshold(num_clusters, n, expected)
    if num_clusters < 2 or (n is not None and n < 2 * num_clusters) or not share >= threshold:
        return None
    return f"one cluster takes {share:.0%} of {what} (threshold {threshold:.0%} for {num_clusters} clusters)"


def prior_term_optimum(prior_form: str, prior_target: Tensor | None, num_clusters: int) -> float:
    """The value of ``L_PRIOR`` at its global optimum, the batch marginal equal to the prior
    (``p_bar = pi``; uniform when ``prior_target`` is None), computed by the term itself:
    ``ln c`` for the cross-entropy form (``H(pi)`` with a target), ``-ln c`` for the entropy form."""
    target = None if prior_target is None else torch.as_tensor(prior_target, dtype=torch.float32)
    pi = torch.full((num_clusters,), 1.0 / num_clusters) if target is None else target
    term = prior_entropy_loss if prior_form == "entropy" else prior_loss
    return float(term(torch.log(pi)[None], target))


@torch.no_grad()
def collapse_indicators(model: GEDIModel, x: Tensor, x_aug: Tensor | None = None) -> dict[str, float]:
    """Gaps to the optima and collapse indicators of ``model`` on one batch.

    ``prior_gap = L_PRIOR - ln c``, ``inv_gap = L_INV`` between ``x`` and ``x_aug`` (left out
    without ``x_aug``), the largest cluster's share of the batch (``batch_images`` images) and the
    embeddings' variance (batches of two or more images)."""
    z = model.embed(x)
    logits = model.logits_from_embedding(z)
    num_clusters = logits.shape[-1]
    shares = torch.bincount(logits.argmax(-1), minlength=num_clusters).float() / x.shape[0]
    out = {"prior_gap": float(prior_loss(logits)) - math.log(num_clusters)}
    if x_aug is not None:
        out["inv_gap"] = float(inv_loss(logits, model(x_aug)))
    out["max_cluster_share"] = float(shares.max())
    out["batch_images"] = int(x.shape[0])
    if x.shape[0] > 1:  # the variance of one embedding is undefined
        out["embedding_var"] = float(z.var(0).mean())
    return out


@dataclass
class FailureMonitor:
    """Reports each failure mode once, when it first shows in the logged indicators."""

    num_clusters: int
    share_threshold: float = SHARE_CAP  # of a batch (see collapse_share_threshold for why not lower)
    variance_threshold: float = 1e-6
    inv_threshold: float = 0.5
    sgld_range: float = 0.0  # SGLD chains beyond this |x| are reported (0: not checked)
    seen: set[str] = field(default_factory=set)

    def check(self, diag: dict[str, float], head_modes: bool = True) -> list[str]:
        """Messages for failure modes that show for the first time.

        With ``head_modes=False`` (methods that do not cluster with the head, e.g. Barlow Twins
        with k-means) only representation collapse and runaway SGLD chains are checked."""
        nan = float("nan")
        share, var = diag.get("max_cluster_share", nan), diag.get("embedding_var", nan)
        inv, chains = diag.get("inv_gap", nan), diag.get("sgld_max_abs", nan)
        n = diag.get("batch_images")
        collapse = collapse_message(share, int(n) if n else None, self.num_clusters, threshold=self.share_threshold)
        modes = {
            "cluster collapse": (head_modes and collapse is not None,
                                 f"{collapse} (L_PRIOR - ln c = {diag.get('prior_gap', nan):.3f})"),
            "representation collapse": (var < self.variance_threshold, f"embedding variance {var:.2e}"),
            "label inconsistency": (head_modes and inv > self.inv_threshold * math.log(max(self.num_clusters, 2)),
                                    f"L_INV = {inv:.3f} (optimum 0)"),
            "runaway SGLD chains": (self.sgld_range > 0 and chains > self.sgld_range,
                                    f"replay buffer values reach |x| = {chains:.3g}, far outside the data range "
                                    f"(|x| <= {self.sgld_range:.3g}); lower sgld.step_size or sgld.noise"),
        }
        messages = []
        for mode, (present, detail) in modes.items():
            if present and mode not in self.seen:
                self.seen.add(mode)
                messages.append(f"{mode}: {detail}")
        return messages
