"""Linear probe on frozen backbone features (paper Table 10 protocol).

The backbone ``g(x)`` is frozen; a multinomial logistic regression (scikit-learn, L-BFGS) is
fitted on the standardised features of the training split with its labels and scored on the
test split: the test accuracy measures how linearly separable the learned representation is.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gedi_core.methods import Method
from gedi_core.models import evaluating


@torch.no_grad()
def extract_features(method: Method, x: Tensor, batch_size: int = 512) -> Tensor:
    """Backbone features ``g(x)`` of ``x`` on the method's device, returned on the CPU."""
    with evaluating(method):
        feats = [method.model.features(chunk.to(method.device)).float().cpu() for chunk in x.split(batch_size)]
    return torch.cat(feats)


def linear_probe(method: Method, train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor,
                 max_iter: int = 1000, c: float = 1.0, seed: int = 0) -> dict[str, float]:
    """Train accuracy and test accuracy of a logistic-regression probe on frozen features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    f_tr = extract_features(method, train_x).numpy()
    f_te = extract_features(method, test_x).numpy()
    scaler = StandardScaler().fit(f_tr)
    clf = LogisticRegression(max_iter=max_iter, C=c, random_state=seed)
    y_tr, y_te = train_y.numpy(), test_y.numpy()
    clf.fit(scaler.transform(f_tr), y_tr)
    return {
        "probe_train_acc": float(np.mean(clf.predict(scaler.transform(f_tr)) == y_tr)),
        "probe_test_acc": float(np.mean(clf.predict(scaler.transform(f_te)) == y_te)),
    }
