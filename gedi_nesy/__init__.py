"""gedi_nesy: GEDI models as DeepProbLog neural predicates.

A GEDI network (gedi_core backbone + cluster head) is registered with DeepProbLog under any
name; ProbLog programs use it through ``nn(NAME, [X], Y, Domain) :: pred(X, Y).``. Training
adds GEDI's generative, prior (and invariance) terms to DeepProbLog's NeSy loss.

Python API (about ten lines)::

    from gedi_nesy import NesyConfig, build_nesy_model, gedi_network, load_pools, task_queries, train_nesy
    cfg = NesyConfig()                          # programs/addition.pl, embedded digits, gedi+nesy
    pools = load_pools(cfg.data, cfg.seed)
    model = build_nesy_model(cfg.program, [gedi_network("gedi_net")], pools)
    train_q = task_queries("addition", pools.train_y, 100, seed=0, source="train")
    metrics = train_nesy(cfg, model, train_q, pools, out="runs/api")
"""

import warnings

with warnings.catch_warnings():  # DeepProbLog warns on import that PySwip (its ApproximateEngine) is missing
    warnings.filterwarnings("ignore", message="ApproximateEngine is not available", category=UserWarning)
    import deepproblog.engines  # noqa: F401

from gedi_nesy.config import NesyConfig, NesyDataConfig, NesyWeights  # noqa: E402
from gedi_nesy.engine import BatchedEngine  # noqa: E402
from gedi_nesy.data import Pools, load_pools, read_query_file, task_queries  # noqa: E402
from gedi_nesy.evaluation import evaluate_nesy  # noqa: E402
from gedi_nesy.network import GEDINetwork, gedi_network  # noqa: E402
from gedi_nesy.plugin import GEDILoss, GEDITrainObject, train_model  # noqa: E402
from gedi_nesy.predict import load_network  # noqa: E402
from gedi_nesy.prior import program_prior  # noqa: E402
from gedi_nesy.program import build_nesy_model, inspect_program, network_domains  # noqa: E402
from gedi_nesy.train import train_nesy  # noqa: E402

__all__ = [
    "BatchedEngine",
    "GEDILoss",
    "GEDITrainObject",
    "GEDINetwork",
    "NesyConfig",
    "NesyDataConfig",
    "NesyWeights",
    "Pools",
    "build_nesy_model",
    "evaluate_nesy",
    "gedi_network",
    "inspect_program",
    "load_network",
    "load_pools",
    "network_domains",
    "program_prior",
    "read_query_file",
    "task_queries",
    "train_model",
    "train_nesy",
]
