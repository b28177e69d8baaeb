"""DeepProbLog's training loop with GEDI's terms added per batch.

For each batch of queries:

1. the images each GEDI network sees in the batch are read off the compiled circuits
   (``ArithmeticCircuit.extract_neural`` with the query's substitution) and sent through
   the network once, as a batch; the probabilities fill DeepProbLog's per-network cache, so
   the exact engine evaluates the circuits with them (same values as its own evaluation);
2. ``L_NESY = -log p(query)`` (cross-entropy against the query's target probability,
   averaged over the batch) comes from the exact engine (SDDs, pysdd);
3. ``L_GEN``, ``L_PRIOR`` (and ``L_INV``) come from gedi_core on the same images and logits;
4. ``loss = w_nesy L_NESY + w_gen L_GEN + w_prior L_PRIOR + w_inv L_INV``, one backward
   pass and one optimizer step for all networks.

The arm masks the weights: ``nesy`` keeps L_NESY only, ``gedi`` drops it.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from problog.logic import term2list
from torch import Tensor
from tqdm.auto import tqdm

from gedi_core.config import to_dict
from gedi_core.data.augment import ImageAugment
from gedi_core.errors import GediError
from gedi_core.losses import gen_loss, inv_loss, prior_entropy_loss, prior_loss
from gedi_core.metrics import clustering_report
from gedi_core.models import energy_from_logits
from gedi_core.runio import (
    CHECKPOINT,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    write_csv,
    write_json,
    write_yaml,
)
from gedi_core.sampling import EnergySampler
from gedi_nesy.config import NesyConfig
from gedi_nesy.engine import _log1mexp, is_batched
from gedi_nesy.network import GEDINetwork, network_domains



def gedi_networks(model) -> "OrderedDict[str, Any]":
    """The model's networks whose module is a :class:`GEDINetwork` (in registration order)."""
    return OrderedDict((n, net) for n, net in model.networks.items() if isinstance(net.network_module, GEDINetwork))


def batch_inputs(model, batch: Sequence) -> dict[str, list]:
    """For each network, the distinct (ground) input terms its neural predicates get in ``batch``."""
    if is_batched(model):
        return model.solver.batch_inputs(batch)
    per_net: dict[str, list] = {}
    seen: dict[str, set] = {}
    for q in batch:
        ac = model.solver.cache.get(q)
        for net_name, inputs in ac.extract_neural():
            name = str(net_name)
            ground = inputs.apply_term(q.substitution)
            if ground not in seen.setdefault(name, set()):
                seen[name].add(ground)
                per_net.setdefault(name, []).append(ground)
    return per_net


def forward_batch(model, per_net: dict[str, list], fill_cache: bool = True,
                  augment: Callable[[Tensor], Tensor] | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """One batched forward pass per GEDI network; fills DeepProbLog's cache with ``p(y|x)``.

    ``augment`` (training only) maps each network's image batch to the views it sees.
    Returns ``{network: (images, logits)}`` (the images after ``augment``)."""
    out: dict[str, tuple[Tensor, Tensor]] = {}
    nets = gedi_networks(model)
    for name, inputs in per_net.items():
        if name not in nets:
            continue
        net = nets[name]
        images = []
        for term in inputs:
            args = term2list(term, False)
            if len(args) != 1:
                raise GediError(f"network '{name}' is a GEDI network and takes one image, got inputs {term}")
            images.append(model.get_tensor(args[0]))
        x = torch.stack(images).to(next(net.network_module.parameters()).device)
        if augment is not None:
            x = augment(x)
        logits = net.network_module.logits(x)
        if fill_cache:
            probs = torch.softmax(logits, dim=-1)
            for j, term in enumerate(inputs):
                net.cache[term] = probs[j]
        out[name] = (x, logits)
    return out


def clear_caches(model) -> None:
    for net in model.networks.values():
        net.cache.clear()


def query_probabilities(model, batch: Sequence) -> list[Tensor | float | None]:
    """``p(q)`` of each query of ``batch`` (None when the query has no proof)."""
    with warnings.catch_warnings():  # DeepProbLog's semiring reads tensors as floats to prune zeros
        warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
        results = model.solve(list(batch))
    out: list[Tensor | float | None] = []
    for r, q in zip(results, batch):
        key = q.substitute().query
        out.append(r.result[key] if key in r.result else None)
    return out


def nesy_loss(probs: Sequence[Tensor | float | None], batch: Sequence, eps: float = 1e-12) -> tuple[Tensor | None, int]:
    """``L_NESY``: mean cross-entropy between each query's target probability and ``p(q)``.
    Queries without a proof are skipped (their number is returned)."""
    terms = []
    skipped = 0
    for p, q in zip(probs, batch):
        if p is None or not torch.is_tensor(p):
            skipped += 1
            continue
        p = p.clamp(0.0, 1.0)
        t = float(q.p)
        loss = -torch.log(p + eps) if t == 1.0 else -(t * torch.log(p + eps) + (1 - t) * torch.log(1 - p + eps))
        terms.append(loss)
    if not terms:
        return None, skipped
    return torch.stack(terms).mean(), skipped


def nesy_loss_log(logp: Tensor, decided: Sequence[bool], batch: Sequence) -> tuple[Tensor | None, int]:
    """``L_NESY`` from the batched engine's ``log p(q)``: the same cross-entropy as
    :func:`nesy_loss`, computed in log space; queries decided without networks are skipped."""
    keep = [i for i, d in enumerate(decided) if not d]
    if not keep:
        return None, len(batch)
    idx = torch.tensor(keep, device=logp.device)
    lp = logp[idx].clamp(max=0.0)
    t = torch.tensor([float(batch[i].p) for i in keep], dtype=lp.dtype, device=lp.device)
    if bool((t == 1.0).all()):
        loss = -lp
    else:
        loss = -(t * lp + (1 - t) * _log1mexp(lp))
    return loss.mean(), len(batch) - len(keep)


def nesy_step_loss(model, batch: Sequence, fwd: dict[str, tuple[Tensor, Tensor]],
                   per_net: dict[str, list]) -> tuple[Tensor | None, int]:
    """``L_NESY`` of one batch with the model's engine: the batched engine reuses the logits of
    the batch's forward pass (networks run once per batch); the exact engine reads the
    probabilities ``forward_batch`` put in DeepProbLog's network caches."""
    if is_batched(model):
        outputs = {n: (per_net[n], torch.log_softmax(logits, dim=-1)) for n, (_, logits) in fwd.items()}
        logp, decided = model.solver.log_probs(batch, outputs)
        return nesy_loss_log(logp, decided, batch)
    return nesy_loss(query_probabilities(model, batch), batch)


class TrainShift:
    """Random shifts of up to ``pixels`` pixels (reflect-padded crop, one offset per image)
    of the training images the networks see; seeded, its state goes into the checkpoint."""

    def __init__(self, pixels: int, seed: int) -> None:
        self.shift = ImageAugment(crop_pad=pixels, jitter_p=0.0, gray_p=0.0, noise=0.0)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: Tensor) -> Tensor:
        return self.shift(x, self.generator)


class GediTerms:
    """L_GEN, L_INV and L_PRIOR of one network, with its SGLD replay buffer."""

    def __init__(self, cfg: NesyConfig, shape: tuple[int, ...], seed: int, weights: dict[str, float]) -> None:
        self.cfg = cfg
        self.weights = weights
        self.sampler = EnergySampler(cfg.sgld, shape, seed=seed) if weights["gen"] > 0 and cfg.sgld.steps >= 0 else None
        self.generator = torch.Generator().manual_seed(seed + 1)

    def __call__(self, module: GEDINetwork, x: Tensor, logits: Tensor) -> dict[str, Tensor]:
        w = self.weights
        terms: dict[str, Tensor] = {}
        if w["gen"] > 0 and self.sampler is not None:
            samples = self.sampler.draw(module.gedi.energy, x.shape[0])
            terms["gen"] = gen_loss(energy_from_logits(logits), module.gedi.energy(samples))
        if w["inv"] > 0:
            noise = torch.randn(x.shape, generator=self.generator).to(x.device) * self.cfg.data.aug_noise
            terms["inv"] = inv_loss(logits, module.logits(x + noise))
        if w["prior"] > 0:
            terms["prior"] = prior_entropy_loss(logits) if self.cfg.prior == "entropy" else prior_loss(logits)
        return terms

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict() if self.sampler else None, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if self.sampler is not None and state.get("sampler") is not None:
            self.sampler.load_state_dict(state["sampler"])
        self.generator.set_state(state["generator"])


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def digit_metrics(module: GEDINetwork, images: Tensor, labels: Tensor, domain: Sequence) -> dict[str, float]:
    """Test digit accuracy (the network's output read through the program's domain, no
    matching), NMI and Hungarian-matched cluster accuracy on the test images."""
    was_training = module.training
    module.eval()
    preds = torch.cat([module.logits(c).argmax(-1).cpu() for c in images.split(1000)])
    module.train(was_training)
    values = []
    for v in domain:
        try:
            values.append(int(str(v)))
        except ValueError:
            values = list(range(len(domain)))  # non-integer domain: compare indices
            break
    named = torch.tensor(values)[preds]
    rep = clustering_report(labels, preds)
    counts = torch.bincount(preds, minlength=len(domain)).float()
    return {
        "digit_acc": float((named == labels.cpu()).double().mean()),
        "nmi": rep["nmi"],
        "cluster_acc": rep["acc"],
        "max_cluster_share": float(counts.max()) / max(len(preds), 1),
    }


@torch.no_grad()
def query_accuracy(model, queries: Sequence, batch_size: int = 100) -> float:
    """Share of queries whose probability is on the same side of 0.5 as their target."""
    if not queries:
        return float("nan")
    model.eval()
    correct = 0
    for start in range(0, len(queries), batch_size):
        batch = queries[start : start + batch_size]
        if not is_batched(model):  # the batched engine runs the networks itself, once per batch
            forward_batch(model, batch_inputs(model, batch))
        for p, q in zip(query_probabilities(model, batch), batch):
            value = 0.0 if p is None else float(p)
            correct += int((value >= 0.5) == (float(q.p) >= 0.5))
        clear_caches(model)
    model.train()
    return correct / len(queries)


def evaluate_nesy(model, pools, test_queries: Sequence | None = None, with_queries: bool = True) -> dict[str, Any]:
    """Digit accuracy / NMI of each GEDI network on the test images (first network's at the
    top level, every network's under ``networks``) and the query accuracy."""
    domains = network_domains(model.gedi_program)
    per_net: dict[str, dict[str, float]] = {}
    for name, net in gedi_networks(model).items():
        if name in domains:
            per_net[name] = digit_metrics(net.network_module, pools.test_x, pools.test_y, domains[name])
    metrics: dict[str, Any] = dict(next(iter(per_net.values()))) if per_net else {}
    if len(per_net) > 1:
        metrics["networks"] = per_net
    if with_queries and test_queries is not None:
        metrics["query_acc"] = query_accuracy(model, test_queries)
    return metrics


# ----------------------------------------------------------------------------- training
def train_nesy(
    cfg: NesyConfig,
    model,
    train_queries: Sequence,
    pools,
    test_queries: Sequence | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``model`` (from :func:`gedi_nesy.network.build_nesy_model`) on ``train_queries``.

    Writes ``config.yaml``, ``log.csv`` (one row per epoch), ``checkpoint.pt`` (every epoch)
    and ``metrics.json`` to ``out``; ``resume`` continues from the checkpoint there.  Returns
    the final metrics: digit_acc, nmi, query_acc, seconds, queries_per_s, ...
    """
    cfg.validate()
    t_start = time.time()
    weights = cfg.active_weights()
    nets = gedi_networks(model)
    if not nets:
        raise GediError("the model has no GEDI network (build networks with gedi_nesy.gedi_network)")
    if not train_queries:
        raise GediError("no training queries")
    params = [p for net in model.networks.values() for p in net.network_module.parameters()]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    shape = tuple(pools.train_x.shape[1:])
    gedi_terms = {name: GediTerms(cfg, shape, cfg.seed + 10 + 7 * i, weights) for i, name in enumerate(nets)}
    shuffler = random.Random(cfg.seed + 3)
    augment = TrainShift(cfg.data.train_shift, cfg.seed + 5) if cfg.data.train_shift > 0 else None
    epochs = cfg.resolved_epochs()
    out_dir = Path(out) if out is not None else None
    rows: list[dict[str, Any]] = []
    start_epoch, train_seconds, n_queries, skipped_total = 0, 0.0, 0, 0
    resumed_seconds = 0.0  # training time of the run before a resume

    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_yaml(out_dir / "config.yaml", to_dict(cfg))
        if resume and (out_dir / CHECKPOINT).exists():
            state = load_checkpoint(out_dir / CHECKPOINT)
            for name, net in model.networks.items():
                net.network_module.load_state_dict(state["networks"][name])
            optimizer.load_state_dict(state["optimizer"])
            for name, terms in gedi_terms.items():
                terms.load_state_dict(state["gedi_terms"][name])
            shuffler.setstate(state["shuffler"])
            if augment is not None and state.get("train_shift") is not None:
                augment.generator.set_state(state["train_shift"])
            torch.set_rng_state(state["torch_rng"])
            rows = state["rows"]
            start_epoch, train_seconds = state["epoch"], state["train_seconds"]
            n_queries, skipped_total = state["n_queries"], state["skipped"]
            resumed_seconds = train_seconds

    def checkpoint(epoch: int) -> None:
        if out_dir is None:
            return
        save_checkpoint(out_dir / CHECKPOINT, {
            "networks": {n: net.network_module.state_dict() for n, net in model.networks.items()},
            "optimizer": optimizer.state_dict(),
            "gedi_terms": {n: t.state_dict() for n, t in gedi_terms.items()},
            "shuffler": shuffler.getstate(),
            "train_shift": augment.generator.get_state() if augment is not None else None,
            "torch_rng": torch.get_rng_state(),
            "rows": rows, "epoch": epoch, "train_seconds": train_seconds,
            "n_queries": n_queries, "skipped": skipped_total, "config": to_dict(cfg),
        })
        write_csv(out_dir / "log.csv", rows)

    n_batches = math.ceil(len(train_queries) / cfg.batch_size)
    bar = tqdm(total=epochs * n_batches, initial=start_epoch * n_batches, disable=not progress,
               desc=f"{cfg.arm} {Path(cfg.program).stem} n={len(train_queries)}", dynamic_ncols=True)
    model.train()
    for epoch in range(start_epoch, epochs):
        order = list(range(len(train_queries)))
        shuffler.shuffle(order)
        sums: dict[str, float] = {}
        t0 = time.time()
        for b in range(n_batches):
            batch = [train_queries[i] for i in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
            per_net = batch_inputs(model, batch)
            fwd = forward_batch(model, per_net, fill_cache=weights["nesy"] > 0 and not is_batched(model),
                                augment=augment)
            terms: dict[str, Tensor] = {}
            if weights["nesy"] > 0:
                lnesy, skipped = nesy_step_loss(model, batch, fwd, per_net)
                skipped_total += skipped
                if lnesy is not None:
                    terms["nesy"] = lnesy
            for name, (x, logits) in fwd.items():
                for k, v in gedi_terms[name](nets[name].network_module, x, logits).items():
                    terms[k] = terms[k] + v if k in terms else v
            clear_caches(model)
            loss = sum(weights[k] * v for k, v in terms.items())
            optimizer.zero_grad(set_to_none=True)
            if torch.is_tensor(loss):
                loss.backward()
                optimizer.step()
            n_queries += len(batch)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach() if torch.is_tensor(loss) else loss)
            bar.update(1)
            bar.set_postfix({k: f"{v / (b + 1):.3f}" for k, v in sums.items()})
        train_seconds += time.time() - t0
        row: dict[str, Any] = {"epoch": epoch + 1, **{k: v / n_batches for k, v in sums.items()},
                               "train_seconds": round(train_seconds, 2)}
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == epochs:
            row.update({k: v for k, v in evaluate_nesy(model, pools, with_queries=False).items() if k != "networks"})
            model.train()
        rows.append(row)
        checkpoint(epoch + 1)
    bar.close()

    final = evaluate_nesy(model, pools, test_queries)
    metrics: dict[str, Any] = {
        **final,
        "arm": cfg.arm,
        "program": str(cfg.program),
        "data": pools.name,
        "data_note": pools.note,
        "examples": len(train_queries),
        "test_queries": len(test_queries) if test_queries is not None else 0,
        "epochs": epochs,
        "seed": cfg.seed,
        "weights": weights,
        "skipped_queries": skipped_total,
        **engine_stats(model),
        "train_seconds": round(train_seconds, 2),
        "queries_per_s": round(n_queries / train_seconds, 2) if train_seconds > 0 else None,
        **(extra or {}),
    }
    metrics["seconds"] = round(resumed_seconds + time.time() - t_start, 2)
    if out_dir is not None:
        write_json(out_dir / "metrics.json", metrics)
    return metrics


def engine_stats(model) -> dict[str, Any]:
    """The engine's name and, for the batched engine, its compilation statistics."""
    if is_batched(model):
        st = model.solver.stats
        return {"engine": "batched", "compiled_shapes": st["shapes"],
                "compile_seconds": round(st["compile_seconds"], 3), "compile_disk_hits": st["disk_hits"]}
    return {"engine": "exact"}


def seed_run(cfg: NesyConfig) -> None:
    """Seed Python, NumPy and torch before the networks are built."""
    seed_everything(cfg.seed)
