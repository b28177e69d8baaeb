"""Clustering quality of a trained method on the held-out split (NMI / ACC / ARI): the test split,
or the validation split of a run with ``data.validation`` (``data.evaluated_on``)."""

from __future__ import annotations

from gedi_core.data.base import DataBundle
from gedi_core.models import evaluating
from gedi_core.methods import Method
from gedi_core.metrics import clustering_report


def evaluate_clustering(method: Method, data: DataBundle) -> dict[str, float]:
    """NMI / ACC / ARI of the method's cluster assignments on ``data.test_x`` (the held-out split; mode restored after)."""
    with evaluating(method):
        method.prepare_eval(data.train_x.to(method.device))
        preds = method.predict(data.test_x.to(method.device)).cpu()
    return clustering_report(data.test_y, preds)
