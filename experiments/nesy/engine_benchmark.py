"""Throughput of gedi_nesy's batched engine against DeepProbLog's ExactEngine.

For each program (addition.pl: three images; sum.pl: the classic two-image sum;
multi_addition.pl: two-digit addition) and batch size (2, 60), the same network (LeNet GEDI
model, same initial weights) is trained with L_NESY on the same queries in the same order
with each engine, and the training throughput (queries/s: forward, inference, backward,
optimizer step) is printed with the ratio.  Also printed:

* compile time (DeepProbLog grounding + SDD per query shape, plus KLay for the batched
  engine; shapes compiled before the timed training, shared between the engines),
* memory: the process's peak RSS (VmHWM; reset per cell where the kernel allows
  /proc/self/clear_refs, else cumulative) and the tensors one batch's inference keeps for
  backward (count, bytes),
* equivalence: a few identical training steps with both engines (loss per step, digit
  accuracy after them),
* where the batched engine's time goes (phases of a training step, cProfile top functions),
* the split of one GEDI+NeSy training step (SGLD sampling, network, inference, rest).

``--deepproblog`` measures instead DeepProbLog's own ``train_model`` (its MNIST-addition
example: ``MNIST_Net``, Adam, ``addition(X, Y, Sum)`` queries, batch 60) with ExactEngine
and with ``BatchedEngine`` set by ``model.set_engine``: queries/s, ratio, and the losses of
the first iterations (same weights, same batches) side by side.

    OMP_NUM_THREADS=1 python -m experiments.nesy.engine_benchmark            # ~4 min on 1 core
    python -m experiments.nesy.engine_benchmark --exact-seconds 5 --batched-seconds 2 --programs sum
    OMP_NUM_THREADS=1 python -m experiments.nesy.engine_benchmark --deepproblog   # ~30 s

Data: the embedded 8x8 digits upscaled to 28x28 (offline); ``--data mnist --data-root DIR``
for MNIST.  Results as JSON lines too (``--json FILE``).
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import json
import pstats
import random
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import torch

from gedi_nesy.config import NesyConfig
from gedi_nesy.data import ImagePool, example_query, image_term, load_pools, task_queries
from gedi_nesy.engine import BatchedEngine, set_engine
from gedi_core.rng import seed_everything
from gedi_nesy.evaluation import digit_metrics
from gedi_nesy.network import gedi_network
from gedi_nesy.program import build_nesy_model
from gedi_nesy.step import batch_inputs, clear_caches, forward_batch, nesy_step_loss
from gedi_nesy.train import nesy_objective

from experiments.common.reporting import REPO

PROGRAMS = {"addition": "programs/addition.pl", "sum": "programs/sum.pl", "multi_addition": "programs/multi_addition.pl"}


def inference_memory(model, batch) -> tuple[int, int]:
    """Tensors the autograd graph of one batch's inference keeps for backward: (count, bytes)."""
    count, size = [0], [0]

    def pack(t):
        count[0] += 1
        size[0] += t.numel() * t.element_size()
        return t

    per_net = batch_inputs(model, batch)
    fwd = forward_batch(model, per_net, fill_cache=not hasattr(model.solver, "log_probs"))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = nesy_step_loss(model, batch, fwd, per_net)
    clear_caches(model)
    return count[0], size[0]


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def train_step(model, batch, opt, timers: dict | None = None) -> float:
    t0 = time.perf_counter()
    per_net = batch_inputs(model, batch)
    fwd = forward_batch(model, per_net, fill_cache=not hasattr(model.solver, "log_probs"))
    t1 = time.perf_counter()
    loss, _ = nesy_step_loss(model, batch, fwd, per_net)
    clear_caches(model)
    t2 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    t3 = time.perf_counter()
    opt.step()
    t4 = time.perf_counter()
    if timers is not None:
        for k, v in (("network", t1 - t0), ("inference", t2 - t1), ("backward", t3 - t2), ("optimizer", t4 - t3)):
            timers[k] = timers.get(k, 0.0) + v
    return float(loss.detach())


def timed_training(model, module, init_state, queries, bs, seconds, lr, timers=None) -> dict:
    """Train from ``init_state`` on ``queries`` (in order, cycling) for about ``seconds``
    (at least 2 batches); returns queries/s and peak memory."""
    module.load_state_dict(init_state)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    train_step(model, queries[:bs], opt)  # warm-up (not timed)
    module.load_state_dict(init_state)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    reset_peak()
    n, b, t0 = 0, 0, time.perf_counter()
    while True:
        start = (b * bs) % len(queries)
        batch = queries[start : start + bs]
        if len(batch) < bs:
            batch = batch + queries[: bs - len(batch)]
        train_step(model, batch, opt, timers)
        n += len(batch)
        b += 1
        if b >= 2 and time.perf_counter() - t0 >= seconds:
            break
    dt = time.perf_counter() - t0
    return {"queries": n, "seconds": round(dt, 2), "queries_per_s": n / dt, "peak_rss_mb": round(peak_mb(), 1)}


def multi_queries(labels: torch.Tensor, n: int, n_sums: int, seed: int) -> list:
    """``n`` two-digit addition queries whose sums come from ``n_sums`` sums drawn at random
    (one compiled shape per sum); images drawn with replacement from the pool."""
    rng = random.Random(seed)
    by_class = {c: [i for i, y in enumerate(labels.tolist()) if y == c] for c in range(10)}
    sums = rng.sample(range(20, 180), n_sums)
    out = []
    for _ in range(n):
        total = rng.choice(sums)
        a = rng.randint(max(0, total - 99), min(99, total))
        digits = [a // 10, a % 10, (total - a) // 10, (total - a) % 10]
        out.append(example_query("multi_addition", [rng.choice(by_class[d]) for d in digits], total, "train"))
    return out


# ----------------------------------------------------------------------------- DeepProbLog's train_model
DPL_ADDITION = """nn(mnist_net,[X],Y,[0,1,2,3,4,5,6,7,8,9]) :: digit(X,Y).
addition(X,Y,Z) :- digit(X,X2), digit(Y,Y2), Z is X2+Y2.
"""  # DeepProbLog's examples/MNIST/models/addition.pl, single-digit part


def dpl_queries(labels: torch.Tensor, n: int, seed: int) -> list:
    """``n`` queries in the shape of DeepProbLog's ``MNISTOperator.to_query``: shuffled pairs
    of training images, ``addition(p0_0, p1_0, Sum)`` with a substitution."""
    from deepproblog.query import Query
    from problog.logic import Constant, Term

    idx = list(range(len(labels)))
    random.Random(seed).shuffle(idx)
    out = []
    for a, b in list(zip(idx[0::2], idx[1::2]))[:n]:
        subs = {Term("p0_0"): image_term("train", a), Term("p1_0"): image_term("train", b)}
        out.append(Query(Term("addition", Term("p0_0"), Term("p1_0"), Constant(int(labels[a] + labels[b]))), subs))
    return out


def dpl_model(pools, engine: str, init_state: dict, circuits: dict | None):
    """DeepProbLog's MNIST-addition model, its engine set with ``Model.set_engine``."""
    from deepproblog.examples.MNIST.network import MNIST_Net
    from deepproblog.model import Model
    from deepproblog.network import Network

    from gedi_nesy.deepproblog_import import import_deepproblog

    import_deepproblog()
    from deepproblog.engines import ExactEngine
    module = MNIST_Net()
    module.load_state_dict(init_state)
    net = Network(module, "mnist_net", batching=True)
    net.optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    model = Model(DPL_ADDITION, [net], load=False)
    with redirect_stdout(io.StringIO()):
        model.set_engine((BatchedEngine if engine == "batched" else ExactEngine)(model), cache=True)
    model.add_tensor_source("train", ImagePool(pools.train_x, "train"))
    if circuits is not None:
        model.solver.cache.cache_dict = circuits  # DeepProbLog's compiled SDDs, shared
    return model


def dpl_train(model, queries: list, batch_size: int, iterations: int) -> tuple[float, float, list[float]]:
    """DeepProbLog's ``train_model`` for ``iterations`` batches: wall seconds, this process's
    CPU seconds (steadier on a shared machine) and the loss of each batch."""
    from deepproblog.dataset import DataLoader, Dataset
    from deepproblog.train import train_model
    from deepproblog.utils.stop_condition import StopCondition

    class Queries(Dataset):
        def __len__(self) -> int:
            return len(queries)

        def to_query(self, i: int):
            return queries[i]

    class After(StopCondition):
        def is_stop(self, train_object) -> bool:
            return train_object.i > iterations

    t0, c0 = time.perf_counter(), time.process_time()
    with redirect_stdout(io.StringIO()):
        trainer = train_model(model, DataLoader(Queries(), batch_size, False), After(), log_iter=1)
    return time.perf_counter() - t0, time.process_time() - c0, trainer.logger.get_attribute("loss")


def deepproblog_benchmark(args, pools, emit) -> None:
    """DeepProbLog's own ``train_model`` with ExactEngine and BatchedEngine: queries/s."""
    from deepproblog.examples.MNIST.network import MNIST_Net

    bs = args.dpl_batch_size
    n_batches = {"exact": args.dpl_exact_batches, "batched": args.dpl_batched_batches}
    queries = dpl_queries(pools.train_y, bs * max(n_batches.values()) + bs, args.seed)
    init_state = copy.deepcopy(MNIST_Net().state_dict())
    print(f"\n== DeepProbLog's train_model, MNIST addition (MNIST_Net, Adam 1e-3, batch {bs}): "
          f"ExactEngine vs BatchedEngine (model.set_engine)", flush=True)
    circuits, res = None, {}
    for engine in ("exact", "batched"):
        model = dpl_model(pools, engine, init_state, circuits)
        t0 = time.perf_counter()
        for q in queries:  # compile every query shape before the timed training
            model.solver.cache.get(q)
            if engine == "batched":
                model.solver.shape(q)
        compile_s = time.perf_counter() - t0
        circuits = model.solver.cache.cache_dict
        model.solve(queries[-bs:])  # warm-up, not timed (queries not trained on)
        seconds, cpu, losses = dpl_train(model, queries, bs, n_batches[engine])
        n = n_batches[engine] * bs
        res[engine] = {"queries_per_s": n / seconds, "queries_per_cpu_s": n / cpu, "seconds": seconds,
                       "cpu_seconds": cpu, "losses": losses, "compile_seconds": compile_s}
        print(f"{engine:>7}: {n_batches[engine]} iterations of {bs} queries in {seconds:6.2f} s = {n / seconds:8.1f} "
              f"queries/s ({cpu:6.2f} s of CPU: {n / cpu:8.1f} queries/CPU-s; shapes compiled before: "
              f"{compile_s:.2f} s)", flush=True)
    ratio = res["batched"]["queries_per_s"] / res["exact"]["queries_per_s"]
    cpu_ratio = res["batched"]["queries_per_cpu_s"] / res["exact"]["queries_per_cpu_s"]
    k = min(len(res["exact"]["losses"]), len(res["batched"]["losses"]))
    diff = max(abs(a - b) for a, b in zip(res["exact"]["losses"][:k], res["batched"]["losses"][:k]))
    print(f"ratio {ratio:.1f}x by wall time, {cpu_ratio:.1f}x by CPU time (goal >= 50x); losses of the first {k} "
          f"iterations: exact "
          f"{[round(v, 5) for v in res['exact']['losses'][:k]]}, batched "
          f"{[round(v, 5) for v in res['batched']['losses'][:k]]} (max |diff| {diff:.1e})", flush=True)
    emit({"kind": "deepproblog_train_model", "batch_size": bs, "ratio": round(ratio, 1),
          "cpu_ratio": round(cpu_ratio, 1), "max_loss_diff": diff,
          **{f"{e}_{key}": round(v, 3) for e, r in res.items() for key, v in r.items() if key != "losses"}})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--programs", default="addition,sum,multi_addition")
    ap.add_argument("--batch-sizes", default="2,60")
    ap.add_argument("--queries", type=int, default=240, help="training queries per program")
    ap.add_argument("--exact-seconds", type=float, default=12.0, help="timed training per exact cell")
    ap.add_argument("--batched-seconds", type=float, default=4.0, help="timed training per batched cell")
    ap.add_argument("--multi-labels", type=int, default=20,
                    help="multi_addition: queries with this many distinct sums (each sum is one compiled "
                         "shape, ~1.5 s to compile); 0 = the task's own examples (up to 199 shapes)")
    ap.add_argument("--equiv-steps", type=int, default=4, help="identical steps per engine for the equivalence check")
    ap.add_argument("--data", default="digits")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the results as JSON lines here")
    ap.add_argument("--deepproblog", action="store_true",
                    help="only DeepProbLog's own train_model, ExactEngine vs BatchedEngine (see above)")
    ap.add_argument("--dpl-batch-size", type=int, default=60)
    ap.add_argument("--dpl-exact-batches", type=int, default=3, help="--deepproblog: timed iterations, ExactEngine")
    ap.add_argument("--dpl-batched-batches", type=int, default=30, help="--deepproblog: timed iterations, batched")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    cfg = NesyConfig()
    cfg.data.name, cfg.data.data_root, cfg.seed = args.data, args.data_root, args.seed
    cfg.validate()
    seed_everything(cfg.seed)
    pools = load_pools(cfg.data, cfg.seed)
    network = "DeepProbLog's MNIST_Net" if args.deepproblog else f"{cfg.model.backbone} GEDI model; lr {cfg.lr}"
    print(f"data: {pools.name} ({pools.note or 'embedded'}); network: {network}; 1 torch thread", flush=True)
    rows: list[dict] = []

    def emit(row: dict) -> None:
        rows.append(row)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")

    if args.deepproblog:
        deepproblog_benchmark(args, pools, emit)
        return 0

    sizes = [int(s) for s in args.batch_sizes.split(",")]
    profiled = False
    for task in args.programs.split(","):
        net = gedi_network("gedi_net", cfg.model, pools.input_shape)
        module = net.network_module
        init_state = copy.deepcopy(module.state_dict())
        if task == "multi_addition" and args.multi_labels > 0:
            queries = multi_queries(pools.train_y, args.queries, args.multi_labels, args.seed)
        else:
            queries = task_queries(task, pools.train_y, args.queries, args.seed, "train", strict=False)
        model = build_nesy_model(REPO / PROGRAMS[task], [net], pools, engine="exact")

        # compile every shape once (DeepProbLog), then the batched engine's circuits on top
        t0 = time.perf_counter()
        shapes = {q.query: q for q in queries}
        for q in shapes.values():
            model.solver.cache.get(q)
        sdd_seconds = time.perf_counter() - t0
        compiled = model.solver.cache.cache_dict
        exact_solver = model.solver
        batched_solver = set_engine(model, "batched")
        batched_solver.cache.cache_dict = compiled  # same SDDs
        t0 = time.perf_counter()
        for q in shapes.values():
            batched_solver.shape(q)
        klay_seconds = time.perf_counter() - t0
        nodes = batched_solver.stats["circuit_nodes"] / max(len(shapes), 1)
        emit({"program": task, "kind": "compile", "shapes": len(shapes), "queries": len(queries),
              "sdd_seconds": round(sdd_seconds, 3), "klay_seconds": round(klay_seconds, 3),
              "mean_circuit_edges": round(nodes)})
        print(f"\n== {task}: {len(queries)} queries, {len(shapes)} query shape(s); compile: DeepProbLog "
              f"ground+SDD {sdd_seconds:.2f} s ({sdd_seconds / len(shapes):.3f} s/shape), KLay circuits "
              f"{klay_seconds:.3f} s, {nodes:.0f} circuit edges/shape", flush=True)
        solvers = {"exact": exact_solver, "batched": batched_solver}

        # equivalence: identical steps, then digit accuracy
        eq = {}
        for engine, solver in solvers.items():
            model.solver = solver
            module.load_state_dict(init_state)
            opt = torch.optim.Adam(module.parameters(), lr=cfg.lr)
            losses = [train_step(model, queries[i * 60 : (i + 1) * 60] or queries[:60], opt)
                      for i in range(args.equiv_steps)]
            acc = digit_metrics(module, pools.test_x, pools.test_y, list(range(10)))["digit_acc"]
            eq[engine] = (losses, acc)
        dl = max(abs(a - b) for a, b in zip(eq["exact"][0], eq["batched"][0]))
        emit({"program": task, "kind": "equivalence", "steps": args.equiv_steps, "max_loss_diff": dl,
              "digit_acc_exact": eq["exact"][1], "digit_acc_batched": eq["batched"][1]})
        print(f"equivalence ({args.equiv_steps} steps of 60 from the same weights): max |loss diff| {dl:.2e}; "
              f"digit_acc exact {eq['exact'][1]:.4f} / batched {eq['batched'][1]:.4f}", flush=True)

        for bs in sizes:
            res = {}
            for engine, solver in solvers.items():
                model.solver = solver
                timers: dict = {}
                seconds = args.exact_seconds if engine == "exact" else args.batched_seconds
                res[engine] = timed_training(model, module, init_state, queries, bs, seconds, cfg.lr, timers)
                res[engine]["phases"] = {k: round(v / res[engine]["seconds"], 3) for k, v in timers.items()}
            for engine, solver in solvers.items():
                model.solver = solver
                n_saved, saved = inference_memory(model, [queries[j % len(queries)] for j in range(bs)])
                res[engine]["inference_saved_tensors"], res[engine]["inference_saved_kb"] = n_saved, round(saved / 1024, 1)
            ratio = res["batched"]["queries_per_s"] / res["exact"]["queries_per_s"]
            emit({"program": task, "kind": "throughput", "batch_size": bs, "ratio": round(ratio, 1),
                  **{f"{e}_{k}": (round(v, 2) if isinstance(v, float) else v) for e, r in res.items() for k, v in r.items()}})
            print(f"batch {bs:>2}: exact {res['exact']['queries_per_s']:8.1f} q/s ({res['exact']['queries']} q, "
                  f"peak RSS {res['exact']['peak_rss_mb']:.0f} MB) | batched {res['batched']['queries_per_s']:8.1f} q/s "
                  f"({res['batched']['queries']} q, peak RSS {res['batched']['peak_rss_mb']:.0f} MB) | "
                  f"ratio {ratio:6.1f}x", flush=True)
            print(f"          inference autograd memory: exact {res['exact']['inference_saved_tensors']} saved tensors "
                  f"({res['exact']['inference_saved_kb']} KB) | batched {res['batched']['inference_saved_tensors']} "
                  f"({res['batched']['inference_saved_kb']} KB)")
            print(f"          time shares  exact {res['exact']['phases']}\n"
                  f"                     batched {res['batched']['phases']}", flush=True)

            if bs == max(sizes) and not profiled and task == "sum":
                profiled = True
                model.solver = batched_solver
                module.load_state_dict(init_state)
                opt = torch.optim.Adam(module.parameters(), lr=cfg.lr)
                prof = cProfile.Profile()
                prof.enable()
                for i in range(10):
                    train_step(model, [queries[(i * bs + j) % len(queries)] for j in range(bs)], opt)
                prof.disable()
                out = io.StringIO()
                pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(14)
                text = out.getvalue()
                print("cProfile, batched engine, sum.pl, 10 steps of batch 60 (top functions by own time):")
                print("\n".join(line for line in text.splitlines()[4:] if line.strip())[:3500], flush=True)
        model.solver = exact_solver

    # one GEDI+NeSy training step (addition, batch 60, SGLD 20 steps): where the time goes
    print("\n== one GEDI+NeSy training step (addition.pl, batch 60 = 180 images, SGLD "
          f"{cfg.sgld.steps} steps, batched engine)", flush=True)
    net = gedi_network("gedi_net", cfg.model, pools.input_shape)
    module = net.network_module
    model = build_nesy_model(REPO / PROGRAMS["addition"], [net], pools)
    queries = task_queries("addition", pools.train_y, 120, args.seed, "train")
    weights = cfg.active_weights()
    objective = nesy_objective(cfg, cfg.seed + 10)
    opt = torch.optim.Adam(module.parameters(), lr=cfg.lr)
    split: dict[str, float] = {}
    steps = 4
    for s in range(steps + 1):
        batch = queries[(s % 2) * 60 : (s % 2 + 1) * 60]
        t = [time.perf_counter()]
        per_net = batch_inputs(model, batch)
        fwd = forward_batch(model, per_net, fill_cache=False)
        x, logits = fwd["gedi_net"]
        t.append(time.perf_counter())
        lnesy, _ = nesy_step_loss(model, batch, fwd, per_net)
        t.append(time.perf_counter())
        samples = objective.sampler_for(x).draw(module.energy, x.shape[0])
        t.append(time.perf_counter())
        from gedi_core.losses import gen_loss, prior_entropy_loss
        from gedi_core.models import energy_from_logits

        loss = weights["nesy"] * lnesy + weights["gen"] * gen_loss(energy_from_logits(logits), module.energy(samples)) \
            + weights["prior"] * prior_entropy_loss(logits)
        t.append(time.perf_counter())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t.append(time.perf_counter())
        if s == 0:
            continue  # warm-up
        for k, (a, b) in zip(("network forward", "inference (batched engine)", "SGLD sampling",
                              "GEDI losses (energy of samples)", "backward + Adam"), zip(t, t[1:])):
            split[k] = split.get(k, 0.0) + (b - a) / steps
    total = sum(split.values())
    for k, v in split.items():
        print(f"  {k:32s} {1000 * v:8.1f} ms  {100 * v / total:5.1f} %")
    print(f"  {'total':32s} {1000 * total:8.1f} ms  ({60 / total:.0f} queries/s)")
    emit({"kind": "gedi_nesy_step", **{k: round(v, 4) for k, v in split.items()}, "total": round(total, 4)})

    print("\n== summary (queries/s, training with L_NESY)")
    print("| program | batch | exact q/s | batched q/s | ratio |")
    print("|---|---|---|---|---|")
    for r in rows:
        if r["kind"] == "throughput":
            print(f"| {r['program']} | {r['batch_size']} | {r['exact_queries_per_s']:.1f} | "
                  f"{r['batched_queries_per_s']:.1f} | {r['ratio']:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
