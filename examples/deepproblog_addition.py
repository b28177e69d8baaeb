"""MNIST addition as DeepProbLog's own example (examples/MNIST/addition.py) writes it, with GEDI.

The script keeps DeepProbLog's shape: a ``Network``, a ``Model`` of a ProbLog program, an engine,
tensor sources, a ``DataLoader`` of ``Query`` objects, ``train_model`` and ``get_confusion_matrix``.
Only the lines marked ``# GEDI`` differ from a plain DeepProbLog script:

- the network is DeepProbLog's own ``MNIST_Net`` with its Adam 1e-3, read as a GEDI network
  (``gedi_network(module, name, ...)`` in place of ``Network(module, name, ...)``);
- the engine is the batched one (``BatchedEngine``; ``--engine exact`` keeps DeepProbLog's);
- ``train_model`` is gedi_nesy's drop-in, which adds the GEDI terms (its default ``GEDILoss``, with
  the class prior the training queries imply; ``--no-gedi`` passes ``gedi=False``).

    python examples/deepproblog_addition.py                         # embedded digits, offline
    python examples/deepproblog_addition.py --data-root ../shared/data/MNIST/raw --examples 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from deepproblog.dataset import DataLoader, Dataset
from deepproblog.evaluate import get_confusion_matrix
from deepproblog.model import Model
from deepproblog.query import Query
from problog.logic import Constant, Term

from deepproblog.examples.MNIST.network import MNIST_Net

from gedi_nesy import BatchedEngine, gedi_network, train_model  # GEDI
from gedi_nesy.config import NesyDataConfig
from gedi_nesy.data import ImagePool, load_pools

PROGRAM = Path(__file__).resolve().parents[1] / "programs" / "sum.pl"


class Addition(Dataset):
    """``n`` random pairs of images of pool ``pool`` and their sum:
    ``sum(tensor(pool(i)), tensor(pool(j)), label_i + label_j)`` (DeepProbLog's MNIST addition)."""

    def __init__(self, pool: str, labels: torch.Tensor, n: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.pool, self.labels = pool, labels
        self.pairs = torch.randint(len(labels), (n, 2), generator=generator).tolist()

    def __len__(self) -> int:
        return len(self.pairs)

    def to_query(self, i: int) -> Query:
        a, b = self.pairs[i]
        x, y = Term("a"), Term("b")
        images = {x: Term("tensor", Term(self.pool, Constant(a))), y: Term("tensor", Term(self.pool, Constant(b)))}
        return Query(Term("sum", x, y, Constant(int(self.labels[a] + self.labels[b]))), images)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=None, help="folder with MNIST's raw files (default: embedded digits)")
    ap.add_argument("--examples", type=int, default=1000)
    ap.add_argument("--test-examples", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--engine", default="batched", choices=["batched", "exact"])
    ap.add_argument("--no-gedi", action="store_true", help="DeepProbLog's own training (L_NESY only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-iter", type=int, default=100)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    pools = load_pools(NesyDataConfig(name="mnist" if args.data_root else "digits", data_root=args.data_root,
                                      download=False), args.seed)
    train_set = Addition("train", pools.train_y, args.examples, args.seed)
    test_set = Addition("test", pools.test_y, args.test_examples, args.seed + 1)

    network = MNIST_Net()
    net = gedi_network(network, "gedi_net", batching=True)  # GEDI: instead of Network(network, "gedi_net", batching=True)
    net.optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    model = Model(str(PROGRAM), [net])
    if args.engine == "batched":
        model.set_engine(BatchedEngine(model), cache=True)  # GEDI: instead of ExactEngine(model)
    else:
        from deepproblog.engines import ExactEngine

        model.set_engine(ExactEngine(model), cache=True)
    model.add_tensor_source("train", ImagePool(pools.train_x, "train"))
    model.add_tensor_source("test", ImagePool(pools.test_x, "test"))

    loader = DataLoader(train_set, args.batch_size, False)
    t0 = time.time()
    # GEDI: gedi_nesy's train_model (its GEDI terms; gedi=False: DeepProbLog's own training)
    train = train_model(model, loader, args.epochs, gedi=False if args.no_gedi else None, log_iter=args.log_iter)
    seconds = time.time() - t0
    accuracy = get_confusion_matrix(model, test_set, verbose=0).accuracy()
    result = {"sum_accuracy": accuracy, "train_seconds": round(seconds, 2),
              "queries_per_s": round(args.epochs * len(train_set) / seconds, 1), "engine": args.engine,
              "gedi_terms": getattr(train, "gedi_terms", {}), "data": pools.note}
    train.logger.comment(json.dumps(model.get_hyperparameters()))
    train.logger.comment(f"Accuracy {accuracy}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
