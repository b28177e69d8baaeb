"""Recipe search for Table 6 with the addition query's probability in closed form.

DeepProbLog's exact engine evaluates ``addition(X, Y, Z)`` (programs/addition.pl) at about
7-10 queries/s on one CPU core, too slow to try recipes at the paper's scale.  For this one
program the probability has a closed form,

    p(addition(x, y, z)) = sum_{a + b <= 9} p(a|x) p(b|y) p(a + b|z),

which this script evaluates for a whole batch at once.  (Superseded by gedi_nesy's batched
engine, ``--engine batched``, which is as fast for any program; kept as the record of the
trials in docs/trials/nesy.md, "2026-11-29: the first recipe".)  Everything else is the plugin's:
pools and examples (gedi_nesy.data), network (gedi_nesy.network), GEDI terms and metrics
(gedi_nesy.train).  At start the closed form is checked against the exact engine on a few
queries (the run stops if they differ).  This is an experiment tool, not a second engine.

    python experiments/nesy_recipe_closed_form.py --data mnist --data-root ../shared/data/MNIST/raw \\
        --examples 1000 --epochs 100 --seed 0 --set weights.prior=25
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gedi_core.config import build_config, dotted_to_nested, parse_set, read_config_file  # noqa: E402
from gedi_nesy.config import NesyConfig  # noqa: E402
from gedi_nesy.data import example_query, load_pools, task_examples  # noqa: E402
from gedi_core.rng import seed_everything  # noqa: E402
from gedi_nesy.evaluation import digit_metrics  # noqa: E402
from gedi_nesy.network import gedi_network  # noqa: E402
from gedi_nesy.program import build_nesy_model  # noqa: E402
from gedi_nesy.step import batch_inputs, clear_caches, forward_batch, query_probabilities  # noqa: E402
from gedi_nesy.train import nesy_objective  # noqa: E402

# M[a, b, c] = 1 iff c = a + b
ADD = torch.zeros(10, 10, 10)
for a in range(10):
    for b in range(10 - a):
        ADD[a, b, a + b] = 1.0


def addition_prob(probs: torch.Tensor) -> torch.Tensor:
    """``probs``: (B, 3, 10) -> p(addition) for each example, (B,)."""
    return torch.einsum("ia,ib,ic,abc->i", probs[:, 0], probs[:, 1], probs[:, 2], ADD)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "experiments/configs/nesy/table6.yaml"))
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--examples", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--arm", default="gedi+nesy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--set", action="append", metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    flags = {"arm": args.arm, "seed": args.seed, "epochs": args.epochs,
             "data": {"name": args.data, "data_root": args.data_root, "examples": args.examples}}
    cfg = build_config(NesyConfig, [("config", read_config_file(args.config)), ("flags", flags),
                                    ("--set", dotted_to_nested(parse_set(args.set)))]).validate()
    seed_everything(cfg.seed)
    pools = load_pools(cfg.data, cfg.seed)
    net = gedi_network("gedi_net", cfg.model, pools.input_shape)
    module = net.network_module
    examples = task_examples("addition", pools.train_y, cfg.data.examples, cfg.seed)
    idx = torch.tensor([imgs for imgs, _ in examples])  # (n, 3)

    # the closed form agrees with DeepProbLog's exact engine
    model = build_nesy_model(REPO / "programs/addition.pl", [net], pools)
    batch = [example_query("addition", imgs, None, "train") for imgs, _ in examples[:5]]
    forward_batch(model, batch_inputs(model, batch))
    exact = torch.stack([p.detach() for p in query_probabilities(model, batch)])
    clear_caches(model)
    with torch.no_grad():
        closed = addition_prob(module(pools.train_x[idx[:5].flatten()]).view(5, 3, -1))
    if not torch.allclose(exact, closed, atol=1e-5):
        raise SystemExit(f"closed form {closed.tolist()} differs from the exact engine {exact.tolist()}")

    weights = cfg.active_weights()
    objective = nesy_objective(cfg, cfg.seed + 10)
    opt = torch.optim.Adam(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    shuffler = random.Random(cfg.seed + 3)
    t0 = time.time()
    hist = []
    for epoch in range(cfg.epochs):
        order = list(range(len(examples)))
        shuffler.shuffle(order)
        for s in range(0, len(order), cfg.batch_size):
            bidx = idx[order[s : s + cfg.batch_size]]
            x = pools.train_x[bidx.flatten()]
            logits = module.logits(x)
            terms = objective.terms(module.logits, x, logits)
            if weights["nesy"] > 0:
                p = addition_prob(torch.softmax(logits, -1).view(len(bidx), 3, -1))
                terms["nesy"] = -torch.log(p.clamp(0, 1) + 1e-12).mean()
            loss = sum(weights[k] * v for k, v in terms.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == cfg.epochs:
            m = digit_metrics(module, pools.test_x, pools.test_y, list(range(10)))
            m = {"epoch": epoch + 1, "seconds": round(time.time() - t0, 1), **{k: round(v, 4) for k, v in m.items()},
                 **{k: round(float(v), 4) for k, v in terms.items()}}
            hist.append(m)
            print(json.dumps(m), flush=True)
    final = {**hist[-1], "examples": cfg.data.examples, "seed": cfg.seed, "arm": cfg.arm, "data_note": pools.note,
             "lr": cfg.lr, "weights": weights, "sgld_steps": cfg.sgld.steps, "tau": cfg.model.tau,
             "best_digit_acc": max(h["digit_acc"] for h in hist)}
    print(json.dumps(final))
    return 0


if __name__ == "__main__":
    sys.exit(main())
