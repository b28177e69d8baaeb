"""Train GEDI networks inside a DeepProbLog model: the NeSy recipe over the one loop.

Read top to bottom: the checks of a start's config and inputs, then :func:`train_start`, which
builds the start (:func:`gedi_nesy.start.build_start`: batch source, objectives, step,
optimizer, monitor, renaming hook), runs :func:`gedi_core.loop.fit` with it (:func:`fit_start`),
evaluates (:func:`start_metrics`) and writes the run folder; then :func:`train_nesy`, which
restarts badly ending starts and keeps the best.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm

from gedi_core.checkpoint import model_state, read_checkpoint
from gedi_core.config import to_dict
from gedi_core.distributed import DistInfo, average_gradients, barrier
from gedi_core.errors import GediError
from gedi_core.loop import FitOptions, FitResult, fit
from gedi_core.monitor import collapse_message, prior_term_optimum
from gedi_core.runfolder import CHECKPOINT, LOCK, METRICS, RunFolder, write_bytes
from gedi_nesy.config import NesyConfig
from gedi_nesy.engine import is_batched
from gedi_nesy.evaluation import evaluate_nesy
from gedi_nesy.restarts import (NEIGHBOURS, StartBudget, StartCut, StartReadings, lowest, neighbour_nesy,
                                network_weights, outside_queries, pool_readings, reinitialize, restore_weights,
                                training_nesy)
from gedi_nesy.program import inspect_program, model_program, network_domains
from gedi_nesy.start import Start, build_start, nesy_objective  # noqa: F401 (nesy_objective: imported from here)
from gedi_nesy.step import gedi_networks


def checked_config(cfg: NesyConfig, model, n_train: int, n_test: int) -> NesyConfig:
    """``cfg`` with the values the run really uses (epochs, numbers of queries); a config that
    names another program or other networks than the model's is refused."""
    built, named = model_program(model), inspect_program(cfg.program)
    signature = lambda info: (info.predicates, [(n.network, n.predicate, n.arity, [str(v) for v in n.domain])  # noqa: E731
                                                for n in info.neural])
    if signature(built) != signature(named):
        raise GediError(f"the config names program {cfg.program}, but the model was built from another program "
                        f"(it defines {', '.join(sorted(f'{p}/{a}' for p, a in built.predicates))}); "
                        "set the config's program to the model's")
    missing = [n for n in cfg.network_names() if n not in model.networks]
    if missing:
        raise GediError(f"the config names network(s) {', '.join(missing)}, which the model does not have "
                        f"(it has: {', '.join(model.networks)})")
    data = dataclasses.replace(cfg.data, examples=n_train, test_examples=n_test,
                               download=cfg.data.download and cfg.data.name == "mnist")
    return dataclasses.replace(cfg, epochs=cfg.resolved_epochs(n_train), data=data)


def checked_start(cfg: NesyConfig, model, train_queries: Sequence, pools, test_queries: Sequence | None,
                  dist: DistInfo) -> NesyConfig:
    """``cfg`` validated (in place) and checked against the model, the queries, the pools and the
    number of processes (:func:`checked_config`): every refusal before the run folder is opened."""
    cfg.validate()
    if not gedi_networks(model):
        raise GediError("the model has no GEDI network (build networks with gedi_nesy.gedi_network)")
    if not train_queries:
        raise GediError("no training queries")
    cfg = checked_config(cfg, model, len(train_queries), len(test_queries or []))
    check_pools(cfg, pools)
    if dist.world_size > cfg.batch_size:
        raise GediError(f"batch_size {cfg.batch_size} cannot be shared by {dist.world_size} processes")
    return cfg


def train_start(cfg: NesyConfig, model, train_queries: Sequence, pools, test_queries: Sequence | None,
                out: str | Path | RunFolder | None, resume: bool, progress: bool, extra: dict[str, Any] | None,
                dist: DistInfo | None, may_cut: bool = False) -> dict[str, Any]:
    """One start of :func:`train_nesy` (the whole run when ``cfg.restarts`` is 0; the arguments
    are :func:`train_nesy`'s). A start that ``may_cut`` and is cut on the plateau
    (``cfg.restart_plateau``) ends there with metrics ``train_nesy``, ``uniform_nesy`` and
    ``cut_at`` (the epoch) only.

    Train ``model`` (a DeepProbLog ``Model`` with GEDI networks, e.g. from
    :func:`gedi_nesy.program.build_nesy_model`) on ``train_queries``.

    Writes ``config.yaml`` (the resolved config), ``log.csv``, ``epochs.csv`` (one row per epoch,
    with digit accuracy / NMI every ``eval_every`` epochs), ``checkpoint.pt`` (every epoch),
    figures and ``metrics.json`` to ``out``; ``resume`` continues the checkpoint there. Returns
    the final metrics: digit_acc, nmi, query_acc, seconds, queries_per_s, ..., and
    ``evaluated_on``: ``test``, or ``validation`` when the pools have a validation split
    (``data.validation``; then ``test_queries`` are the validation queries and the test pool is
    never read).

    Under torchrun (``dist``, from :func:`gedi_core.distributed.init_distributed`) each rank
    grounds and evaluates its share of every batch's queries with its own replay buffer and
    random streams; gradients are averaged over the ranks; rank 0 logs, checkpoints, evaluates
    and returns the metrics (the other ranks return ``{}``).
    """
    t_start = time.time()
    dist = dist or DistInfo()
    cfg = checked_start(cfg, model, train_queries, pools, test_queries, dist)
    domains = network_domains(model_program(model))
    run = out if isinstance(out, RunFolder) or out is None else RunFolder(out, {}, resume, dist.is_main).open()
    if run is not None:
        run.config, run.defaults = to_dict(cfg), to_dict(NesyConfig())
        run.inputs = input_files(cfg)
    start = build_start(cfg, model, train_queries, pools, test_queries, domains, dist, may_cut)
    try:
        result = fit_start(start, run, progress)
    except StartCut as cut:
        metrics = {"train_nesy": round(cut.loss, 6), "uniform_nesy": round(cut.uniform, 6), "cut_at": cut.epoch,
                   "seconds": round(time.time() - t_start, 2)}
        if run is not None:
            run.finish(metrics)
        return metrics
    if not dist.is_main:
        barrier(dist)
        return {}
    metrics = start_metrics(start, result, extra)
    metrics["seconds"] = round(result.resumed_seconds + time.time() - t_start, 2)
    if run is not None:
        write_start_figures(start, result, run)
        run.finish(metrics)
    barrier(dist)
    return metrics


def fit_start(start: Start, run: RunFolder | None, progress: bool) -> FitResult:
    """The start's training: :func:`gedi_core.loop.fit` with an evaluation (digit accuracy, NMI)
    every ``eval_every`` epochs and after the last, and the renaming hook."""
    cfg, dist = start.cfg, start.dist

    def on_epoch_end(epoch: int, is_last: bool) -> dict[str, Any]:
        if (epoch + 1) % cfg.eval_every == 0 or is_last:
            found = evaluate_nesy(start.model, start.pools, start.domains, with_queries=False)
            return {k: v for k, v in found.items() if k not in ("networks", "evaluated_on")}
        return {}

    label = f"{cfg.arm} {Path(cfg.program).stem} seed {cfg.seed}"
    options = FitOptions(epochs=cfg.epochs, log_every=start.batches.steps_per_epoch,
                         desc=f"{label} n={len(start.train_queries)}", progress=progress, label=label,
                         item_name="queries", bar_fields=BAR_FIELDS)
    return fit(start.step, start.batches, start.optimizer, options, run=run, monitor=start.monitor,
               on_epoch_end=on_epoch_end, dist=dist, device=torch.device(cfg.device), after_epoch=start.after_epoch,
               grad_sync=(lambda ps: average_gradients(ps, dist)) if dist.enabled else None)


def start_metrics(start: Start, result: FitResult, extra: dict[str, Any] | None) -> dict[str, Any]:
    """The start's metrics (all but ``seconds``): the final evaluation, the run's description,
    its warnings (a final cluster collapse included), the engine's statistics and ``extra``."""
    cfg, pools, test_queries, weights, priors = start.cfg, start.pools, start.test_queries, start.weights, start.priors
    fitted = {"train_nesy": round(training_nesy(start.model, start.train_queries), 6)} \
        if weights["nesy"] > 0 and (cfg.restarts or cfg.rename_every) else {}
    if weights["nesy"] > 0 and cfg.rename_neighbours and result.epoch_rows:
        fitted["neighbour_false"] = result.epoch_rows[-1].get("neighbour_false")
    if weights["nesy"] > 0 and cfg.restart_judge == "neighbours":
        fitted["neighbour_nesy"] = round(neighbour_nesy(start.model, start.train_queries, pools.train_x), 6)
    final = evaluate_nesy(start.model, pools, start.domains, test_queries)
    first_name, first = next(iter(start.nets.items()))
    expected = float(priors[first_name].max()) if first_name in priors else None
    n_eval = len(pools.eval_x)
    collapse = collapse_message(final.get("max_cluster_share", float("nan")), n_eval, first.network_module.num_clusters,
                                f"the {n_eval} {pools.evaluated_on} images", expected)
    warnings = result.warnings + ([f"final evaluation: cluster collapse: {collapse}"] if collapse else [])
    return {
        **final,
        "arm": cfg.arm,
        "program": str(cfg.program),
        "data": pools.name,
        "data_note": pools.note,
        "examples": len(start.train_queries),
        # the number of evaluation queries (query_acc), named after the pool they are drawn from
        ("validation_queries" if pools.evaluated_on == "validation" else "test_queries"):
            len(test_queries) if test_queries is not None else 0,
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "weights": weights,
        "prior_target": {n: [round(float(v), 5) for v in p] for n, p in priors.items()} or "uniform",
        "skipped_queries": start.step.skipped,
        "renamings": [{"epoch": r["epoch"], "renamed": r[key]} for r in result.epoch_rows
                      for key in ("renamed", "renamed_neighbours") if r.get(key)],
        **engine_stats(start.model),
        "train_seconds": round(result.seconds, 2),
        "queries_per_s": result.items_per_s and round(result.items_per_s * start.dist.world_size, 2),
        "world_size": start.dist.world_size,
        "warnings": warnings,
        **result.final_diagnostics(("prior_gap", "max_cluster_share", "embedding_var")),
        **fitted,
        **(extra or {}),
    }


def write_start_figures(start: Start, result: FitResult, run: RunFolder) -> None:
    """The start's figures in ``run`` (the logged losses against the prior term's optimum, the
    replay buffers' samples, the clusters)."""
    from gedi_nesy.figures import write_figures

    optimum = sum(prior_term_optimum(o.prior_form, o.prior_target, start.nets[n].network_module.num_clusters)
                  for n, o in start.objectives.items())  # the logged L_PRIOR is summed over the networks
    write_figures(start.model, start.pools, start.domains, result.rows, run,
                  samples={n: o.buffer_samples() for n, o in start.objectives.items()},
                  prior_optimum=optimum if start.weights["prior"] > 0 else None)


def train_nesy(
    cfg: NesyConfig,
    model,
    train_queries: Sequence,
    pools,
    test_queries: Sequence | None = None,
    out: str | Path | RunFolder | None = None,
    resume: bool = False,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
    dist: DistInfo | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``train_queries`` (:func:`train_start`), with up to ``cfg.restarts``
    restarts: while the training ``L_NESY`` a start ends with (``train_nesy``, no label needed) is
    above ``cfg.restart_above``, the GEDI networks are drawn afresh (:func:`reinitialize`) and
    trained again; the start with the lowest training ``L_NESY`` is kept, in the model and as the
    run. With ``cfg.restart_plateau`` a start (but the last) still at the loss of uniform predictions
    after that many epochs is cut there and counts as a restart, once ``cfg.plateau_cuts`` cuts
    have been made that do not (:class:`~gedi_nesy.restarts.StartBudget`). A wrongly named run
    (digits 4-9 read as 3-8, two digits in one cluster) ends at 0.65-0.71 on MNIST addition,
    healthy ones at 0.1-0.25. With ``cfg.restart_agree`` a start is also drawn afresh until one
    reads the pool's images outside the queries as an earlier finished start does, Cohen's kappa
    ``cfg.restart_agree`` or more (:func:`~gedi_nesy.restarts.agreement`), and ``cfg.restart_quorum``
    starts do, every two of them (:meth:`~gedi_nesy.restarts.StartReadings.group`); the start kept is then
    the lowest judged of that group or, where the budget ran out first, of the largest agreeing
    groups that hold a start under the bound (:func:`agreeing_starts`).

    With restarts and a run folder ``out``, start ``k`` is a run folder of its own,
    ``out/start<k>`` (resumed, or reused when finished, like any run); ``out`` gets the kept start's
    files and ``metrics.json`` with ``starts``: each start's ``train_nesy`` and test metrics. The
    returned metrics are the kept start's, with ``starts`` and ``chosen_start``."""
    if cfg.active_weights()["nesy"] > 0 and (cfg.restart_judge == "neighbours" or cfg.restart_agree):
        outside_queries(model, train_queries, len(pools.train_x), NEIGHBOURS)  # refused now, not after training
    budget = StartBudget(cfg.restarts, cfg.plateau_cuts)
    if not budget.may_cut() or cfg.active_weights()["nesy"] == 0:  # one start; the GEDI-only arm has no L_NESY
        return train_start(cfg, model, train_queries, pools, test_queries, out, resume, progress, extra, dist)
    dist = dist or DistInfo()
    if dist.enabled:
        raise GediError("restarts: not supported under torchrun; set restarts to 0")
    run = out if isinstance(out, RunFolder) or out is None else RunFolder(out, {}, False, dist.is_main).open()
    found: list[tuple[dict[str, Any], dict[str, Any]]] = []  # each start's (metrics, network weights)
    readings = StartReadings()  # each finished start's pool_readings (with cfg.restart_agree)
    for k in itertools.count():
        if k:
            reinitialize(model, cfg.seed + 1000 * k)
        folder = None if run is None else run.path / f"start{k}"
        if folder is not None and (folder / METRICS).is_file():  # a finished start: reused
            done = json.loads((folder / METRICS).read_text())  # a cut one is never kept: its weights are not needed
            found.append((done, {} if done.get("cut_at") is not None else load_start_weights(folder)))
        else:
            metrics = train_start(cfg, model, train_queries, pools, test_queries, folder,
                                  resume and folder is not None and (folder / CHECKPOINT).is_file(),
                                  progress, extra, dist, may_cut=budget.may_cut())
            found.append((metrics, {} if metrics.get("cut_at") is not None else network_weights(model)))
        ended = found[-1][0]
        cut = ended.get("cut_at") is not None
        if cfg.restart_agree and not cut:
            ended.update(start_agreement(model, found[-1][1], readings, k, cfg, train_queries, pools))
        again = (cut or not accepted(found, ended, cfg)) and budget.spend(cut)
        tqdm.write(f"[{cfg.arm} seed {cfg.seed}] start {k}: {start_outcome(ended, cfg, again)}")
        if not again:
            break
    return keep_best_start(model, found, run, among=agreeing_starts(found, readings, k, cfg) or None)


def agreeing_starts(found: list[tuple[dict[str, Any], dict[str, Any]]], readings: StartReadings, last: int,
                    cfg: NesyConfig) -> list[int]:
    """With ``cfg.restart_agree``, the starts one of which :func:`train_nesy` keeps: the group
    that ended the run with its ``last`` start (:func:`accepted`) or, where the budget ran out
    first, the largest agreeing groups that hold a start under the bound (a start that agrees with
    none is a group of one: at validation seeds 0 and 3 two wrongly named starts of one seed agreed,
    both over the bound, beside a healthy start under it); ``[]`` (every start) without it, or
    where no start is under the bound."""
    if not cfg.restart_agree:
        return []
    if accepted(found, found[last][0], cfg):
        return sorted([last, *found[last][0]["agrees_with"]])
    under = lambda group: any(judged_loss(found[j][0]) <= cfg.restart_above for j in group)  # noqa: E731
    return readings.largest_groups(cfg.restart_agree, under)


def accepted(found: list[tuple[dict[str, Any], dict[str, Any]]], ended: dict[str, Any], cfg: NesyConfig) -> bool:
    """Whether the start that ``ended`` (the last of ``found``, not cut) ends the run: its judged
    loss is ``cfg.restart_above`` or less; with ``cfg.restart_agree``, it agrees with
    ``cfg.restart_quorum - 1`` earlier starts (``agrees_with``) and one of the group is judged so."""
    if not cfg.restart_agree:
        return judged_loss(ended) <= cfg.restart_above
    group = [ended, *(found[j][0] for j in ended.get("agrees_with", []))]
    return len(group) >= cfg.restart_quorum and min(map(judged_loss, group)) <= cfg.restart_above


def start_agreement(model, weights: dict[str, Any], readings: StartReadings, k: int, cfg: NesyConfig,
                    train_queries: Sequence, pools) -> dict[str, Any]:
    """Start ``k``'s :func:`~gedi_nesy.restarts.pool_readings` (from ``weights``, now in
    ``model``), added to ``readings``, and how it agrees with the earlier finished starts:
    ``agreement``, the largest kappa between its readings and one of theirs (0 for the first),
    and ``agrees_with``, the others of the largest group of starts with it whose every two agree
    at ``cfg.restart_agree`` or more (:meth:`~gedi_nesy.restarts.StartReadings.group`), where there is one."""
    restore_weights(model, weights)
    readings.add(k, pool_readings(model, train_queries, pools.train_x))
    group = [j for j in readings.group(k, cfg.restart_agree) if j != k]
    return {"agreement": round(readings.most_alike(k), 6), **({"agrees_with": group} if group else {})}


def judged_loss(metrics: dict[str, Any]) -> float:
    """The loss a start is judged and kept by (``cfg.restart_judge``): ``neighbour_nesy`` where
    the start has it, else its training ``L_NESY``."""
    return metrics.get("neighbour_nesy", metrics["train_nesy"])


def start_outcome(metrics: dict[str, Any], cfg: NesyConfig, restart: bool) -> str:
    """How a start ended, as :func:`train_nesy` prints it (``restart``: another start follows)."""
    said = f"training L_NESY {metrics['train_nesy']:.4f}"
    if metrics.get("cut_at") is not None:  # only a start that is not the last is cut
        return (f"{said} at epoch {metrics['cut_at']}, on the plateau (uniform predictions: "
                f"{metrics['uniform_nesy']:.4f}): cut, restart")
    if "neighbour_nesy" in metrics:
        said += f", with the pool's neighbours {metrics['neighbour_nesy']:.4f}"
    if "agreement" in metrics:
        others = metrics.get("agrees_with", [])
        alike = f"start{'s' * (len(others) > 1)} {', '.join(map(str, others))} do{'es' * (len(others) == 1)}" \
            if others else "no earlier start does"
        said += f", reads the pool's other images as {alike} (kappa {metrics['agreement']:.4f})"
    if not restart:
        return said
    if judged_loss(metrics) > cfg.restart_above:
        return f"{said} > {cfg.restart_above:g}: restart"
    if cfg.restart_quorum > 2 and metrics.get("agrees_with"):
        return f"{said}: restart (fewer than {cfg.restart_quorum} starts agree at kappa {cfg.restart_agree:g})"
    return f"{said}: restart (kappa under {cfg.restart_agree:g} with every earlier start)"


def keep_best_start(model, found: list[tuple[dict[str, Any], dict[str, Any]]], run: RunFolder | None,
                    among: list[int] | None = None) -> dict[str, Any]:
    """Put the start with the lowest judged loss (:func:`judged_loss`), of the starts ``among``
    (default all), into ``model`` and, with a run folder, its files into ``run`` (``metrics.json``
    last, with every start's figures)."""
    among = among if among is not None else list(range(len(found)))
    best = among[lowest([judged_loss(found[k][0]) for k in among], [found[k][0].get("cut_at") is not None for k in among])]
    restore_weights(model, found[best][1])
    starts = [{"start": k, "train_nesy": m["train_nesy"],
               **{key: m[key] for key in ("neighbour_nesy", "agreement", "agrees_with") if key in m},
               **{key: m.get(key) for key in ("digit_acc", "nmi", "query_acc", "seconds")},
               **({"cut_at": m["cut_at"]} if m.get("cut_at") is not None else {})}
              for k, (m, _) in enumerate(found)]
    result = {**found[best][0], "starts": starts, "chosen_start": best,
              "seconds": round(sum(s["seconds"] or 0 for s in starts), 2)}
    result.pop("inputs", None)
    if run is not None:
        run.lock()
        for f in sorted((run.path / f"start{best}").iterdir()):
            if f.is_file() and f.name not in (METRICS, LOCK):
                write_bytes(run.path / f.name, f.read_bytes())
        run.finish(result)
    return result


def load_start_weights(folder: Path) -> dict[str, Any]:
    """The networks' weights a finished start ended with (its checkpoint)."""
    return model_state(read_checkpoint(folder / CHECKPOINT))["networks"]


def input_files(cfg: NesyConfig) -> dict[str, str | None]:
    """The input files a run depends on (the run folder keeps their digests, and the program)."""
    return {"program": cfg.program, "queries": cfg.data.queries, "test_queries": cfg.data.test_queries}


# the progress bar: the weighted total loss (with the entropy-form L_PRIOR, optimum -ln c, it is
# negative), L_NESY (optimum 0) and the monitored gap of the batch marginal to the uniform one
BAR_FIELDS = {"total": "loss", "nesy": "nesy", "prior_gap": "prior_gap"}


def check_pools(cfg: NesyConfig, pools) -> None:
    """The pools match the config's protocol: a validation pool (and no test pool) exactly when
    ``data.validation`` is set, so that ``evaluated_on`` and the config agree."""
    if cfg.data.validation > 0 and (pools.val_x is None or pools.test_x is not None):
        raise GediError(f"data.validation is {cfg.data.validation:g} but the pools have "
                        f"{'no validation pool' if pools.val_x is None else 'a test pool'}; "
                        "build them with gedi_nesy.load_pools(cfg.data, cfg.seed)")
    if cfg.data.validation == 0 and pools.val_x is not None:
        raise GediError("the pools have a validation pool but data.validation is 0; set data.validation to the "
                        "fraction they were carved with")


def engine_stats(model) -> dict[str, Any]:
    """The engine's name and, for the batched engine, its compilation statistics."""
    if is_batched(model):
        st = model.solver.stats
        return {"engine": "batched", "compiled_shapes": st["shapes"],
                "compile_seconds": round(st["compile_seconds"], 3), "compile_disk_hits": st["disk_hits"]}
    return {"engine": "exact"}
