"""Networks that read one-hot digit images by a fixed scheme: a right reader, and readers that
fit the images their training queries show and name every other image wrongly (the failure
the pool's neighbours see). Shared by the tests of restarts and of renaming."""

from __future__ import annotations

import torch
from torch import nn

from gedi_nesy import gedi_network
from gedi_nesy.data import Pools, task_queries
from gedi_nesy.program import build_nesy_model
from gedi_nesy.restarts import pool_index
from gedi_nesy.step import batch_inputs

ADDITION = "programs/addition.pl"
RIGHT = list(range(10))
NEXT_DIGIT = [9, *range(9)]  # every image outside the queries read as the next digit


class SchemeReader(nn.Module):
    """Reads a one-hot digit image right where its 11th pixel is set (the images the queries
    show), and every other image as ``scheme`` names it (its class ``j`` is digit ``scheme[j]``)."""

    def __init__(self, scheme: list[int]) -> None:
        super().__init__()
        self.register_buffer("scheme", torch.tensor(scheme))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        onehot, shown = x[:, :10], x[:, 10:11]
        return shown * onehot + (1 - shown) * onehot[:, self.scheme]


def scheme_model(scheme: list[int], pool_seed: int = 0, query_seed: int = 1, queries: int = 60,
                 engine: str = "batched", n: int = 600):
    """addition.pl over ``n`` one-hot images (an 11th pixel, set on the images ``queries``
    training queries show) with a :class:`SchemeReader` network; ``(model, pools, queries)``."""
    y = torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(pool_seed))
    x = torch.cat([torch.nn.functional.one_hot(y, 10).float(), torch.zeros(n, 1)], 1).reshape(n, 1, 1, 11)
    pools = Pools(train_x=x, train_y=y, test_x=x[:20].clone(), test_y=y[:20], name="one-hot")
    module = nn.Sequential(nn.Flatten(), SchemeReader(scheme), nn.Linear(10, 10))
    with torch.no_grad():
        module[2].weight.copy_(torch.eye(10))
        module[2].bias.zero_()
    model = build_nesy_model(ADDITION, [gedi_network(module, "gedi_net", lr=0.0, weight_decay=0.0)], pools,
                             engine=engine)
    train_q = task_queries("addition", y, queries, seed=query_seed)
    shown = [pool_index(t) for t in batch_inputs(model, train_q)["gedi_net"]]
    x.reshape(-1, 11)[shown, 10] = 1.0  # in place: the model's tensor source holds this tensor
    return model, pools, train_q
