"""Training throughput of GEDI+NeSy against the NeSy arm and the plain forward-backward floor.

One run, one machine, MNIST addition (programs/addition.pl, three images per query) on the
embedded digits, batch 60, the batched engine, the recipe of ``gedi_nesy/config.py``. Each arm
has its own :class:`gedi_nesy.step.NesyStep` (objectives, replay buffer), Adam and the recipe's
training shifts on the one network (its weights do not change what a step costs); after a warm-up,
the arms take turns (``--rounds``) until each had about ``--seconds``, so that other load on the
machine hits them alike:

* ``nesy``: the NeSy arm (L_NESY only);
* ``gedi+nesy paper``: L_NESY + GEDI with the paper's SGLD (``nesy_sgld()``: 20 steps, one chain
  per image, every optimizer step);
* ``gedi+nesy recipe``: the same with ``nesy_fast_sgld()`` (60 chains on every 2nd step,
  buffer 3333; the recipe since commit 0272b13, docs/trials/nesy.md);
* ``gedi+nesy without L_GEN``: ``--w-gen 0`` (L_NESY + L_PRIOR; no SGLD);
* ``gedi+nesy chains=C every=K``: other SGLD settings, ``--candidates`` (``sgld.chains`` /
  ``sgld.every`` / ``sgld.steps``, see ``gedi_core/objective.py``);
* ``floor``: network forward on the batch's (pre-stacked) images, L_NESY from the engine,
  backward and Adam: no query bookkeeping, no GEDI terms.

Printed: a Markdown table (queries/s and ms per step over whole SGLD cycles, the SGLD time per
step, the speed-up over the paper's setting and the ratio step / (NeSy step + its SGLD time), the
yardstick for the levers) and one JSON line.

    OMP_NUM_THREADS=1 python -m experiments.nesy.speed_benchmark                 # ~1.5 min
    python -m experiments.nesy.speed_benchmark --threads 2 --seconds 5 --candidates 60:2,60:4
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import sys
import time

import torch

from gedi_core.rng import seed_everything
from gedi_core.sgld import EnergySampler
from gedi_nesy.run_setup import prepare
from gedi_nesy.config import NesyConfig, nesy_fast_sgld, nesy_sgld
from gedi_nesy.step import NesyStep, TrainShift, batch_inputs, forward_batch, gedi_networks, nesy_step_loss
from gedi_nesy.train import nesy_objective


class SGLDClock:
    """Seconds spent in :meth:`EnergySampler.draw` (all SGLD of a step) while installed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.original = EnergySampler.draw

    def __enter__(self) -> "SGLDClock":
        clock, original = self, self.original

        def draw(sampler, energy_fn, n, steps=None):
            t0 = time.perf_counter()
            try:
                return original(sampler, energy_fn, n, steps)
            finally:
                clock.seconds += time.perf_counter() - t0

        EnergySampler.draw = draw  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc) -> None:
        EnergySampler.draw = self.original  # type: ignore[method-assign]


class Arm:
    """One arm's step function and its timings so far (steps, seconds, SGLD seconds)."""

    def __init__(self, name: str, spec: dict, step_fn) -> None:
        self.name, self.spec, self.step_fn = name, spec, step_fn
        self.every = spec.get("every", 1)
        self.times: list[float] = []
        self.sgld_seconds = 0.0
        self.calls = 0

    def run(self, batches: list, seconds: float) -> None:
        """About ``seconds`` of steps, whole SGLD cycles (a multiple of ``every`` steps)."""
        with SGLDClock() as clock:
            start = time.perf_counter()
            while self.calls % self.every or time.perf_counter() - start < seconds:
                t0 = time.perf_counter()
                self.step_fn(batches[self.calls % len(batches)])
                self.times.append(time.perf_counter() - t0)
                self.calls += 1
        self.sgld_seconds += clock.seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="timed seconds per arm (after a warm-up)")
    ap.add_argument("--rounds", type=int, default=4, help="the arms take turns this many times")
    ap.add_argument("--candidates", default="60:1,0:2,60:4",
                    help="SGLD settings to time, CHAINS:EVERY[:STEPS] comma-separated (chains 0: one per image; "
                         "steps: SGLD steps, default the recipe's 20)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--examples", type=int, default=300, help="training queries cycled through (5 batches of 60)")
    ap.add_argument("--batch-size", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    candidates = [[int(v) for v in c.split(":")] for c in args.candidates.split(",") if c.strip()]

    cfg = NesyConfig()
    cfg.seed, cfg.batch_size, cfg.data.examples = args.seed, args.batch_size, args.examples
    cfg.validate()
    pools, model, train_q, _ = prepare(cfg, quiet=True)
    bs = cfg.batch_size
    batches = [train_q[i:i + bs] for i in range(0, len(train_q) - bs + 1, bs)]
    nets = gedi_networks(model)
    params = [p for net in nets.values() for p in net.network_module.parameters()]
    seed_everything(cfg.seed)

    def fresh_optimizer() -> torch.optim.Adam:
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    paper = nesy_sgld()

    def nesy_step_fn(arm: str, sgld=None, gen: float | None = None):
        """A NesyStep training step of ``arm`` with SGLD ``sgld`` (default: the recipe's) and
        ``L_GEN`` weight ``gen`` (default: the recipe's)."""
        c = copy.deepcopy(cfg)
        c.arm = arm
        if gen is not None:
            c.weights.gen = gen
        if sgld is not None:
            c.sgld = sgld
        objectives = {name: nesy_objective(c, cfg.seed + 10 + 7 * i) for i, name in enumerate(nets)}
        step = NesyStep(model, objectives, c.active_weights()["nesy"], TrainShift(c.data.train_shift, cfg.seed + 5))
        opt = fresh_optimizer()
        step.train()

        def run(batch):
            out = step(batch)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()

        return run

    # the floor: images stacked once per batch; forward, L_NESY, backward, Adam
    def floor_fn():
        opt = fresh_optimizer()
        prepared = {}
        for b in batches:
            per_net = batch_inputs(model, b)
            fwd = forward_batch(model, per_net, fill_cache=False)
            prepared[id(b)] = (per_net, {n: x.detach() for n, (x, _) in fwd.items()})

        def run(batch):
            per_net, images = prepared[id(batch)]
            fwd = {n: (x, nets[n].network_module.logits(x)) for n, x in images.items()}
            loss, _ = nesy_step_loss(model, batch, fwd, per_net)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return run

    def spec(sgld) -> dict:
        return {"arm": "gedi+nesy", "chains": sgld.chains, "every": sgld.every, "sgld_steps": sgld.steps,
                "buffer_size": sgld.buffer_size}

    def label(sgld) -> str:
        return f"chains={sgld.chains or 'images'} every={sgld.every} steps={sgld.steps}"

    arms = [Arm("nesy", {"arm": "nesy"}, nesy_step_fn("nesy")),
            Arm(f"gedi+nesy paper ({label(paper)})", spec(paper), nesy_step_fn("gedi+nesy", paper)),
            Arm(f"gedi+nesy recipe ({label(nesy_fast_sgld())})", spec(nesy_fast_sgld()),
                nesy_step_fn("gedi+nesy", nesy_fast_sgld())),
            Arm("gedi+nesy without L_GEN (--w-gen 0)", {"arm": "gedi+nesy", "gen": 0.0},
                nesy_step_fn("gedi+nesy", gen=0.0))]
    for chains, every, *steps in candidates:
        sgld = dataclasses.replace(paper, chains=chains, every=every, steps=steps[0] if steps else paper.steps)
        arms.append(Arm(f"gedi+nesy {label(sgld)}", spec(sgld), nesy_step_fn("gedi+nesy", sgld)))
    arms.append(Arm("floor (forward + L_NESY backward + Adam)", {"arm": "floor"}, floor_fn()))

    images_per_batch = sum(len(v) for v in batch_inputs(model, batches[0]).values())
    print(f"# GEDI+NeSy speed: MNIST addition on embedded digits, batch {bs} queries ({images_per_batch} images), "
          f"{torch.get_num_threads()} thread(s), batched engine, SGLD {cfg.sgld.steps} steps; torch {torch.__version__}",
          flush=True)
    for arm in arms:  # warm-up: one SGLD cycle each (at least 2 steps), not timed
        for i in range(max(2, arm.every)):
            arm.step_fn(batches[i % len(batches)])
        arm.calls = 0
    load0 = os.getloadavg()[0]
    for r in range(args.rounds):  # interleaved, so that other load on the machine hits every arm alike
        for arm in arms:
            arm.run(batches, args.seconds / args.rounds)
        print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{a.name.split(' (')[0]} {len(a.times)}" for a in arms),
              file=sys.stderr, flush=True)
    results = []
    for arm in arms:
        mean = statistics.fmean(arm.times)
        results.append({"name": arm.name, **arm.spec, "steps": len(arm.times), "ms_per_step": round(1000 * mean, 1),
                        "queries_per_s": round(bs / mean, 1),
                        "sgld_ms_per_step": round(1000 * arm.sgld_seconds / len(arm.times), 1)})
    nesy_ms = results[0]["ms_per_step"]
    paper_ms = results[1]["ms_per_step"]
    print()
    print("| arm | queries/s | ms/step | SGLD ms/step | speed-up vs paper | step / (NeSy + SGLD) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        ratio = r["ms_per_step"] / (nesy_ms + r["sgld_ms_per_step"]) if r["arm"] == "gedi+nesy" else None
        r["vs_nesy_plus_sgld"] = round(ratio, 2) if ratio is not None else None
        r["speedup_vs_paper"] = round(paper_ms / r["ms_per_step"], 2)
        print(f"| {r['name']} | {r['queries_per_s']} | {r['ms_per_step']} | {r['sgld_ms_per_step']} | "
              f"{r['speedup_vs_paper']}x | {f'{ratio:.2f}' if ratio is not None else '-'} |")
    print()
    print(json.dumps({"benchmark": "nesy_speed", "threads": torch.get_num_threads(), "batch_size": bs,
                      "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
                      "images_per_batch": images_per_batch, "seconds_per_arm": args.seconds,
                      "torch": torch.__version__, "arms": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
