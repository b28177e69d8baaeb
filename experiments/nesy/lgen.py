"""What ``L_GEN`` buys in NeSy: the GEDI+NeSy arm with and without the generative term.

Reads two sets of finished Table 6 run folders that differ only in ``weights.gen`` (made by
``experiments.nesy.table6``, the second with ``--set weights.gen=0``) and writes, per number
of training examples:

- digit accuracy, NMI and query accuracy of both (every seed, median (mean ± sample std));
- what only the generative term gives: each trained network's energy ``E(x)`` as an
  out-of-distribution score, the AUROC of separating Fashion-MNIST images (out) from the run's
  evaluation pool of MNIST digits (in), higher energy meaning "out";
- sample grids: evaluation digits, the replay buffer of a run with ``L_GEN``, and fresh SGLD
  chains started from uniform noise under each arm's energy.

    python -m experiments.nesy.table6 --data mnist --data-root ../shared/data/MNIST/raw --arms gedi+nesy \\
        --sizes 100,1000 --seeds 10,11,12,13,14 --set data.split_seed=0 --out runs/table6
    python -m experiments.nesy.table6 ... --set weights.gen=0 --out runs/table6_nogen
    python -m experiments.nesy.lgen --with runs/table6 --without runs/table6_nogen \\
        --sizes 100,1000 --seeds 10,11,12,13,14 --out experiments/results

Writes ``nesy_lgen.md``, ``nesy_lgen.csv`` (the table), ``nesy_lgen_runs.csv`` (one row per run)
and ``nesy_lgen_samples.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from gedi_core.checkpoint import extra_state, local_state
from gedi_core.data.idx import find_idx_files, read_idx_files
from gedi_core.errors import GediError
from gedi_core.models import energy_from_logits, evaluating
from gedi_core.figures import save_figure
from gedi_core.runfolder import write_csv, write_text
from gedi_core.sgld import EnergySampler, sgld as run_sgld
from gedi_nesy.data import load_pools
from gedi_nesy.predict import image_logits, run_config, run_networks

from experiments.common.reporting import markdown_table, seed_summary, shown_command, shown_path

FASHION_DIRS = [Path("/usr/share/datasets/fashion-mnist")]  # Debian's dataset-fashion-mnist


def fashion_images(root: Path | None, n: int) -> torch.Tensor:
    """The first ``n`` Fashion-MNIST test images in [-1, 1], as the MNIST pools are scaled."""
    found = find_idx_files([root] if root else FASHION_DIRS, "t10k")
    if found is None:
        raise GediError(f"--ood-root: no Fashion-MNIST t10k files in {root or FASHION_DIRS[0]} "
                        "(apt-get install dataset-fashion-mnist)")
    images, _ = read_idx_files(*found)
    return images[:n].float().unsqueeze(1) / 255.0 * 2.0 - 1.0


def energies(module, x: torch.Tensor) -> torch.Tensor:
    return energy_from_logits(image_logits(module, x))


def auroc(energy_in: torch.Tensor, energy_out: torch.Tensor) -> float:
    """AUROC of the energy separating out-of-distribution (positive, higher energy) from in."""
    from sklearn.metrics import roc_auc_score

    labels = [0] * len(energy_in) + [1] * len(energy_out)
    return float(roc_auc_score(labels, torch.cat([energy_in, energy_out]).numpy()))


def fresh_samples(module, cfg, shape, n: int, steps: int, seed: int) -> torch.Tensor:
    """``n`` SGLD chains of ``steps`` steps from uniform noise under ``module``'s energy (the run's
    step size and noise; a fresh buffer, so nothing of the training's chains is reused)."""
    sgld = dataclasses.replace(cfg.sgld, buffer_size=n, reinit_freq=0.0, chains=0, every=1)
    sampler = EnergySampler(sgld, tuple(shape), seed=seed)
    torch.manual_seed(seed)
    with evaluating(module):
        return run_sgld(lambda s: energy_from_logits(module.logits(s)), sampler.buffer.data.clone(), steps,
                        sgld.step_size, sgld.noise)


def study_run(run: Path, ood: torch.Tensor) -> dict:
    """One run folder: its metrics, the energy AUROC against ``ood``, and its network."""
    cfg, state = run_config(run)
    metrics = json.loads((run / "metrics.json").read_text())
    pools = load_pools(cfg.data, cfg.seed)  # the run's pools: the same evaluation pool it was scored on
    name = cfg.network_names()[0]
    net = run_networks(cfg, state, pools.input_shape)[name]
    e_in, e_out = energies(net.network_module, pools.eval_x), energies(net.network_module, ood)
    objective = extra_state(local_state(state)["objectives"][name])
    buffer = objective.get("kept")  # the last SGLD samples (sgld.every > 1), else the buffer's chains
    if buffer is None:
        buffer = (objective.get("sampler") or {}).get("data")
    return {"row": {"examples": metrics["examples"], "gen": cfg.weights.gen, "seed": cfg.seed,
                    "evaluated_on": metrics.get("evaluated_on", "test"),
                    **{k: metrics.get(k) for k in ("digit_acc", "nmi", "query_acc", "queries_per_s", "seconds")},
                    "ood_auroc": round(auroc(e_in, e_out), 4),
                    "energy_in": round(float(e_in.mean()), 3), "energy_out": round(float(e_out.mean()), 3)},
            "module": net.network_module, "cfg": cfg, "pools": pools, "buffer": buffer}


def sample_figure(found: dict, sizes: list[int], seed: int, steps: int, path: Path) -> None:
    """Rows of 10 images per panel: data, the L_GEN run's replay buffer, fresh SGLD under each arm."""
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    panels = []
    for n in sizes:
        with_gen, without = found.get((n, "with", seed)), found.get((n, "without", seed))
        if with_gen is None or without is None:
            continue
        shape = with_gen["pools"].input_shape
        panels.append((f"{n} examples: evaluation digits", with_gen["pools"].eval_x[:20]))
        if with_gen["buffer"] is not None:
            panels.append((f"{n} examples, with L_GEN: the training's last SGLD samples", with_gen["buffer"][:20]))
        for arm, res in (("with", with_gen), ("without", without)):
            x = fresh_samples(res["module"], res["cfg"], shape, 20, steps, seed)
            panels.append((f"{n} examples, {arm} L_GEN: {steps} SGLD steps from noise", x))
    if not panels:
        return
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 0.75 * len(panels)))
    for ax, (title, x) in zip(list(axes) if len(panels) > 1 else [axes], panels):
        grid = make_grid(((x.detach().cpu() + 1) / 2).clamp(0, 1), nrow=20, padding=1)
        ax.imshow(grid.permute(1, 2, 0).numpy())
        ax.set_title(title, fontsize=8, loc="left")
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--with", dest="with_gen", required=True, help="folder of the gedi+nesy runs with L_GEN")
    ap.add_argument("--without", required=True, help="folder of the same runs with weights.gen=0")
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--seeds", default="10,11,12,13,14")
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--ood-root", default=None, help="Fashion-MNIST raw files (default: Debian's package)")
    ap.add_argument("--ood-images", type=int, default=2000)
    ap.add_argument("--sgld-steps", type=int, default=100, help="steps of the fresh chains of the sample grid")
    ap.add_argument("--out", default="experiments/results")
    command = shown_command("experiments.nesy.lgen", list(sys.argv[1:] if argv is None else argv))
    args = ap.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        ap.error("--sizes and --seeds: comma-separated integers")
    torch.set_num_threads(1)
    try:
        ood = fashion_images(Path(args.ood_root) if args.ood_root else None, args.ood_images)
        found, rows = {}, []
        for n in sizes:
            for arm, folder in (("with", args.with_gen), ("without", args.without)):
                for seed in seeds:
                    run = Path(folder) / f"{args.data}_n{n}_gedi_nesy_s{seed}"
                    if not (run / "metrics.json").is_file():
                        print(f"not run: {run}", file=sys.stderr)
                        continue
                    res = study_run(run, ood)
                    res["row"]["L_GEN"] = arm
                    found[(n, arm, seed)] = res
                    rows.append(res["row"])
                    print(json.dumps(res["row"]), flush=True)
    except GediError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "nesy_lgen_runs.csv", rows)
    table = []
    for n in sizes:
        for arm in ("with", "without"):
            done = [r for r in rows if r["examples"] == n and r["L_GEN"] == arm]
            if not done:
                continue
            table.append({"examples": n, "L_GEN": f"{arm} (gen {done[0]['gen']:g})",
                          **{k: seed_summary([r[k] for r in done]) for k in ("digit_acc", "nmi", "query_acc",
                                                                             "ood_auroc")},
                          "queries_per_s": seed_summary([r["queries_per_s"] for r in done], 1),
                          "seeds": ", ".join(str(r["seed"]) for r in done)})
    write_csv(out / "nesy_lgen.csv", table)
    sample_figure(found, sizes, seeds[0], args.sgld_steps, out / "nesy_lgen_samples.png")
    pools_seen = sorted({r["evaluated_on"] for r in rows})
    lines = ["# What L_GEN buys in NeSy (MNIST addition, GEDI+NeSy arm)", "",
             f"Command: `{command}`", "",
             f"Runs: `{shown_path(args.with_gen)}` (with L_GEN) and `{shown_path(args.without)}` (the same config with "
             f"`weights.gen=0`), evaluated on the {' and '.join(pools_seen)} pool. OOD: the energy of "
             f"{args.ood_images} Fashion-MNIST test images (out) against the run's evaluation pool of MNIST digits "
             "(in); AUROC 0.5 is chance. Each cell: median (mean ± sample std) over the seeds; every run in "
             "`nesy_lgen_runs.csv`. Sample grids: `nesy_lgen_samples.png`.", "",
             *markdown_table(table)]
    write_text(out / "nesy_lgen.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
