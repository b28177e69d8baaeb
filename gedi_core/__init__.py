"""gedi_core: GEDI (generative + discriminative) self-supervised clustering.

GEDI trains one network ``p(y|x) = softmax(U^T g(x) / tau)`` with three terms:
a contrastive-divergence energy term (``L_GEN``), an invariance term (``L_INV``)
and a uniform-prior term (``L_PRIOR``).  See :mod:`gedi_core.losses.gedi`.
"""

from gedi_core.errors import GediError

__version__ = "0.1.0"

__all__ = ["GediError", "__version__"]
