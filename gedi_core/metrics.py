"""Clustering metrics: NMI, ARI (scikit-learn) and accuracy under Hungarian matching (scipy)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, confusion_matrix, normalized_mutual_info_score


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


def nmi(labels, preds) -> float:
    """Normalised mutual information (arithmetic normalisation, scikit-learn's default)."""
    return float(normalized_mutual_info_score(_np(labels), _np(preds)))


def ari(labels, preds) -> float:
    """Adjusted Rand index."""
    return float(adjusted_rand_score(_np(labels), _np(preds)))


def cluster_accuracy(labels, preds) -> float:
    """Accuracy after the best one-to-one matching of clusters to labels (Hungarian algorithm).

    Works when the numbers of clusters and classes differ (unmatched clusters count as errors).
    """
    y, p = _np(labels), _np(preds)
    classes = np.unique(np.concatenate([y, p]))
    cm = confusion_matrix(y, p, labels=classes)
    rows, cols = linear_sum_assignment(cm, maximize=True)
    return float(cm[rows, cols].sum() / max(len(y), 1))


def clustering_report(labels, preds) -> dict[str, float]:
    """``{'nmi', 'acc', 'ari'}`` of one assignment."""
    return {"nmi": nmi(labels, preds), "acc": cluster_accuracy(labels, preds), "ari": ari(labels, preds)}
