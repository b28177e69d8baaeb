"""Use a trained run: export its networks, and predict images and queries.

- :func:`export_networks` writes only the networks' weights, model configs and input shapes
  (not the replay buffer, the optimizer or the log), and :func:`load_network` turns such a file
  back into a DeepProbLog ``Network`` in one line: ``net = load_network("net.pt")``;
- :func:`predict` gives, per image, each network's class probabilities and energy ``E(x)`` (an
  out-of-distribution score: high energy, unlike the training data), and per query its
  probability; for a query with free variables, every answer with its probability and the most
  likely one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from gedi_core.checkpoint import config_of, load_checkpoint, model_state, read_checkpoint
from gedi_core.config import ModelConfig, from_dict, to_dict
from gedi_core.errors import GediError
from gedi_core.models import energy_from_logits, evaluating
from gedi_core.runfolder import (CHECKPOINT, PROGRAM, check_output_file, check_output_folder, save_checkpoint,
                                 write_csv, write_json)
from gedi_nesy.config import NesyConfig
from gedi_nesy.network import gedi_network

EXPORT_FORMAT = "gedi-nesy-networks/1"


def run_config(run: Path) -> tuple[NesyConfig, dict[str, Any]]:
    """The config and checkpoint of a gedi-nesy run folder.  A run that keeps its program
    (``program.pl``, written by training) is read with that text, wherever the folder now lies
    and whatever the original file holds now; an older run falls back to the program's path."""
    if not (run / CHECKPOINT).is_file():
        raise GediError(f"--run {run}: no {CHECKPOINT} there (train with gedi-nesy train --out {run})")
    state = read_checkpoint(run / CHECKPOINT)
    model = model_state(state) if isinstance(state.get("step"), dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("networks"), dict) \
            or not isinstance(config_of(state), dict):
        raise GediError(f"--run {run}: {CHECKPOINT} is not a gedi-nesy checkpoint")
    cfg = from_dict(NesyConfig, config_of(state), f"{run}/{CHECKPOINT}").validate()
    if (run / PROGRAM).is_file():
        if cfg.data.queries is None and cfg.data.task == "auto":  # the task is named by the original file
            from gedi_nesy.tasks import resolve_task

            cfg.data.task = resolve_task(cfg.data.task, cfg.program)
        cfg.program = str(run / PROGRAM)
    return cfg, state


def load_weights(module: torch.nn.Module, state_dict: Any, where: str) -> None:
    """``module.load_state_dict(state_dict)``; missing, unexpected or reshaped tensors are one line
    naming the first such tensor (and ``where`` the weights come from)."""
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise GediError(f"{where}: the weights are not a state dict of tensors")
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        first = f"missing tensor {missing[0]!r}" if missing else f"unexpected tensor {unexpected[0]!r}"
        raise GediError(f"{where}: the weights do not fit the network built from its config ({first}, "
                        f"{len(missing)} missing, {len(unexpected)} unexpected)")
    for k, v in state_dict.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise GediError(f"{where}: tensor '{k}' has shape {tuple(v.shape)}, but the network built from its "
                            f"config expects {tuple(own[k].shape)} (another head or backbone?)")
    module.load_state_dict(state_dict)


def export_networks(run: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the trained networks of run folder ``run`` to ``out`` (a fresh file, written
    atomically); returns what was written."""
    out = check_output_file(out)
    run = Path(run)
    cfg, state = run_config(run)
    model = model_state(state)
    shapes = model.get("input_shapes", {})
    payload = {"format": EXPORT_FORMAT, "program": config_of(state).get("program", cfg.program), "networks": {
        name: {"model": to_dict(cfg.model), "input_shape": list(shapes.get(name, (1, 28, 28))), "state_dict": sd}
        for name, sd in model["networks"].items()}}
    save_checkpoint(out, payload)
    return {"out": str(out), "networks": list(payload["networks"]), "bytes": Path(out).stat().st_size}


def load_network(path: str | Path, name: str | None = None, **network_kwargs: Any):
    """The network ``name`` (default: the only or first one) of an exported file, as a DeepProbLog
    ``Network`` (see :func:`gedi_nesy.gedi_network` for ``network_kwargs``).  A file that is not
    an intact export is a :class:`GediError` naming what is wrong."""
    payload = load_checkpoint(path)
    if payload.get("format") != EXPORT_FORMAT:
        raise GediError(f"{path}: not a file written by gedi-nesy export")
    nets = payload.get("networks")
    if not isinstance(nets, dict) or not nets:
        raise GediError(f"{path}: the export holds no networks")
    if name is not None and not isinstance(name, str):
        raise GediError(f"load_network: name must be a network name (str), got {type(name).__name__}")
    name = name or next(iter(nets))
    if name not in nets:
        raise GediError(f"{path}: no network '{name}' (has: {', '.join(nets)})")
    entry = nets[name]
    if not isinstance(entry, dict) or not {"model", "input_shape", "state_dict"} <= set(entry):
        raise GediError(f"{path}: network '{name}' lacks its model, input_shape or state_dict")
    shape = entry["input_shape"]
    if not isinstance(shape, (list, tuple)) or not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise GediError(f"{path}: network '{name}': input_shape must be positive integers, got {shape!r}")
    net = gedi_network(name, from_dict(ModelConfig, entry["model"], f"{path}: network '{name}'"), shape,
                       **network_kwargs)
    load_weights(net.network_module, entry["state_dict"], f"{path}: network '{name}'")
    return net


def run_networks(cfg: NesyConfig, state: dict[str, Any], input_shape: Sequence[int],
                 where: str = CHECKPOINT) -> dict[str, Any]:
    """The trained networks of a run (``cfg, state`` from :func:`run_config`), as DeepProbLog
    ``Network`` objects taking images of ``input_shape``."""
    networks = {name: gedi_network(name, cfg.model, tuple(input_shape)) for name in cfg.network_names()}
    load_run_weights(networks, state, where)
    return networks


def load_run_weights(networks: dict[str, Any], state: dict[str, Any], where: str) -> None:
    """Load a run checkpoint's weights (``state``, read from ``where``) into DeepProbLog ``Network``
    objects by name; a network it lacks or weights that do not fit are one line."""
    saved = model_state(state)["networks"]
    for name, net in networks.items():
        if name not in saved:
            raise GediError(f"{where}: no weights of network '{name}' (has: {', '.join(saved)})")
        load_weights(net.network_module, saved[name], f"{where}: network '{name}'")


@torch.no_grad()
def image_logits(module, images: torch.Tensor) -> torch.Tensor:
    """A GEDI network's cluster logits of ``images`` in evaluation mode, 1000 images at a time."""
    with evaluating(module):
        return torch.cat([module.logits(c) for c in images.split(1000)])


@torch.no_grad()
def image_predictions(networks: dict, images: torch.Tensor, domains: dict[str, list]) -> list[dict[str, Any]]:
    """One row per image and network: the predicted value, each class's probability, the energy."""
    rows = []
    for name, net in networks.items():
        module = net.network_module
        domain = [str(v) for v in domains.get(name, range(module.num_clusters))]
        logits = image_logits(module, images)
        probs = torch.softmax(logits, -1)
        energy = energy_from_logits(logits)
        for i in range(len(images)):
            rows.append({"image": i, "network": name, "predicted": domain[int(probs[i].argmax())],
                         **{f"p_{v}": round(float(probs[i, j]), 6) for j, v in enumerate(domain)},
                         "energy": round(float(energy[i]), 6)})
    return rows


def query_predictions(model, queries: Sequence) -> list[dict[str, Any]]:
    """One row per answer of each query: its probability, and whether it is the most likely."""
    rows = []
    with evaluating(*[net.network_module for net in model.networks.values()]), torch.no_grad():
        results = model.solve(list(queries))
    for i, (q, r) in enumerate(zip(queries, results)):
        shown = q.query.apply_term(q.substitution)
        answers = sorted(((str(t), float(p)) for t, p in r.result.items()), key=lambda a: -a[1])
        if not answers:
            rows.append({"query": i, "term": str(shown), "answer": "", "probability": 0.0, "most_likely": False})
        for k, (term, p) in enumerate(answers):
            rows.append({"query": i, "term": str(shown), "answer": term, "probability": round(p, 6),
                         "most_likely": k == 0})
    return rows


PREDICTIONS = ("predictions.csv", "predictions.json")
QUERY_PREDICTIONS = ("queries.csv", "queries.json")


def predict(run: str | Path, images_path: str | Path, queries_path: str | Path | None = None,
            out: str | Path | None = None) -> dict[str, Any]:
    """Predict the images of an .npz (array ``images`` or ``test_images``) and, with a query file
    over ``tensor(images(I))``, its queries; writes ``predictions.csv``/``.json`` (and
    ``queries.csv``/``.json``) to ``out`` (default: the run folder). Returns a summary.

    Every check runs before anything is written: the output files must be fresh (never
    overwritten), and every query must ground (a query whose image arguments are free is one
    line naming its file and line)."""
    from gedi_nesy.image_sets import npz_image_array
    from gedi_nesy.pools import ImagePool
    from gedi_nesy.query_file import read_query_file
    from gedi_nesy.program import build_nesy_model, inspect_program, network_domains

    run = Path(run)
    names = PREDICTIONS + (QUERY_PREDICTIONS if queries_path is not None else ())
    out_dir = check_output_folder(out if out is not None else run, names)
    cfg, state = run_config(run)
    images = npz_image_array(images_path)
    info = inspect_program(cfg.program)
    domains = network_domains(info)
    networks = run_networks(cfg, state, images.shape[1:], str(run / CHECKPOINT))
    queries, model = [], None
    if queries_path is not None:
        model = build_nesy_model(cfg.program, list(networks.values()), None, engine=cfg.engine)
        model.add_tensor_source("images", ImagePool(images, "images"))

        def grounds(q) -> bool:  # compiles the query's circuit: a query that cannot ground is refused here
            model.solver.cache.get(q)
            return True

        queries = read_query_file(queries_path, {"images": len(images)}, info.predicates, grounds, ground=False)
    rows = image_predictions(networks, images, domains)
    qrows = query_predictions(model, queries) if model is not None else []
    out_dir.mkdir(exist_ok=True)
    write_csv(out_dir / "predictions.csv", rows)
    write_json(out_dir / "predictions.json", rows)
    summary: dict[str, Any] = {"images": len(images), "predictions": str(out_dir / "predictions.csv")}
    if model is not None:
        write_csv(out_dir / "queries.csv", qrows)
        write_json(out_dir / "queries.json", qrows)
        summary.update(queries=len(queries), query_predictions=str(out_dir / "queries.csv"))
    return summary
