"""The paper's vision claims at CPU scale: Fashion-MNIST, a ResNet-8 of width 16, every method of Table 4.

    python -m experiments.vision.cpu --ood-root ../shared/data       # seeds 0,1,2, 2 runs at a time
    python -m experiments.vision.cpu --validation 0.1 --seeds 0 --runs runs/vision_cpu_select --out runs/vision_cpu_select

For each method (GEDI, GEDI no gen, JEM, Barlow Twins, SwAV) and seed, one run is trained on the
60,000 Fashion-MNIST training images with ``experiments/configs/vision_cpu/fashion-mnist_<method>.yaml``
(settings chosen on a validation split, see ``docs/trials/vision.md``) and then evaluated on
the 10,000 test images (with ``--validation F``: on a split held out of the training images, the
test images unread):

- NMI and ACC of the cluster assignments (Table 4; k-means on the features for Barlow Twins);
- OOD AUROC of the energy score ``-E(x)`` and of ``-||dE/dx||`` against MNIST (Table 5's test; the
  OOD images are the 2,000-image test pool of the MNIST t10k split, ``--ood``);
- linear-probe accuracy on the frozen backbone (Table 10);
- generation: FID of SGLD samples, in the feature space of a small classifier trained with labels on
  the training split (no Inception weights needed): drawn from noise (every method), and continued
  from the replay buffer (the methods trained with L_GEN, JEM's way of sampling); a grid of samples
  per method beside real images (``<name>_samples.png``; from the buffer where there is one);
- references: k-means on raw pixels (one per seed), and the FID of real training images and of the
  SGLD starting noise against the test images.

Finished runs are reused and killed ones resumed; evaluations are cached in each run's eval.json.
Writes OUT/<name>.md, <name>.csv (one row per method), <name>_runs.csv (one row per run) and the
sample figure. MNIST for the OOD column is looked for under ``--ood-root`` (torchvision layout,
``MNIST/raw``), default ``$GEDI_DATA_ROOT`` or ``./data``.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from gedi_core.data.base import DataBundle

from experiments.common.reporting import REPO, markdown_table, shown_command, shown_path
from experiments.vision.common import LABELS, cell, collect, ensure_eval, parser, run_dir, seeds_text

CPU_CONFIGS = REPO / "experiments" / "configs" / "vision_cpu"


def has_replay_buffer(folder: Path) -> bool:
    """Whether the run was trained with L_GEN (so ``gedi-core eval`` also samples from its buffer)."""
    return float(yaml.safe_load((folder / "config.yaml").read_text())["weights"]["gen"]) > 0


def fid_extractor(args: Any, dataset: str, load_data: Callable[[], DataBundle]) -> tuple[Path, float]:
    """The FID feature extractor of ``dataset`` (trained once on its training split; cached in RUNS)."""
    from gedi_core.evaluation.classifier_features import build_feature_extractor
    from gedi_core.runfolder import write_json

    path = Path(args.runs) / f"fid_features_{dataset}.pt"
    info = path.with_suffix(".json")
    if path.is_file() and info.is_file():
        return path, json.loads(info.read_text())["held_out_acc"]
    torch.set_num_threads(max(1, args.jobs))
    data = load_data()
    built = build_feature_extractor(data, path, epochs=2, seed=0)
    acc = built["held_out_acc"]
    write_json(info, {"held_out_acc": acc, "evaluated_on": data.evaluated_on, "train_images": len(data.train_x)})
    print(f"FID features: classifier trained on {len(data.train_x)} images, held-out accuracy {acc:.3f}", flush=True)
    return path, acc


def references(args: Any, dataset: str, features: Path, load_data: Callable[[], DataBundle]) -> dict[str, list[float]]:
    """Raw-pixel k-means (NMI, ACC) per seed; FID of real training images and of the SGLD start noise."""
    from sklearn.cluster import KMeans

    from gedi_core.evaluation import fid_score
    from gedi_core.metrics import clustering_report
    from gedi_core.runfolder import write_json

    path = Path(args.runs) / f"references_{dataset}.json"
    key = f"{args.validation}:{','.join(map(str, args.seeds))}:{args.fid_samples}"
    if path.is_file() and json.loads(path.read_text()).get("key") == key:
        return json.loads(path.read_text())["values"]
    data = load_data()
    flat = data.test_x.flatten(1).numpy()
    out: dict[str, list[float]] = {"nmi": [], "acc": []}
    for seed in args.seeds:
        report = clustering_report(data.test_y, KMeans(10, n_init=10, random_state=seed).fit_predict(flat))
        out["nmi"].append(report["nmi"])
        out["acc"].append(report["acc"])
    n = min(args.fid_samples, len(data.test_x), len(data.train_x))
    gen = torch.Generator().manual_seed(0)
    real = data.train_x[torch.randperm(len(data.train_x), generator=gen)[:n]]
    noise = torch.rand((n, *data.input_shape), generator=gen) * 2 - 1  # the samplers' start, U(-1, 1)
    out["fid_real"] = [fid_score(data.test_x[:n], real, features=str(features))]
    out["fid_noise"] = [fid_score(data.test_x[:n], noise, features=str(features))]
    write_json(path, {"key": key, "values": out})
    return out


def sample_figure(args: Any, dataset: str, path: Path, load_data: Callable[[], DataBundle]) -> None:
    """One panel per method: its seed-``args.seeds[0]`` SGLD samples (continued from the replay buffer
    where the method has one, else from noise), beside real test images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gedi_core.figures import save_image_grid
    from gedi_core.runfolder import atomic_path

    seed = args.seeds[0]
    real_png = Path(args.runs) / f"real_{dataset}.png"
    if not real_png.is_file():
        save_image_grid(load_data().test_x[:100], real_png, nrow=10)
    panels = [("real test images", real_png)]
    for m in args.methods:
        folder = run_dir(args, dataset, m, seed)
        for png, where in (("samples_buffer.png", "from buffer"), ("samples.png", "from noise")):
            if (folder / png).is_file():
                panels.append((f"{LABELS[m]} ({where})", folder / png))
                break
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.3))
    for ax, (title, png) in zip(list(getattr(axes, "flat", [axes])), panels):
        ax.imshow(plt.imread(png), cmap="gray")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.suptitle(f"{dataset}: {args.fid_steps} SGLD steps from the replay buffer or from noise, seed {seed}",
                 fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from gedi_core.config import DataConfig
    from gedi_core.data import load_dataset

    p = parser(__doc__, ["fashion-mnist"])
    p.set_defaults(configs=CPU_CONFIGS, runs="runs/vision_cpu", seeds=[0, 1, 2], jobs=2, out="experiments/results")
    p.add_argument("--ood", default="mnist-t10k", help="OOD data set (its test split / test pool)")
    p.add_argument("--ood-root", default=None, help="where the OOD set's files are (sets GEDI_DATA_ROOT)")
    p.add_argument("--fid-samples", type=int, default=1000, help="SGLD samples (and test images) per FID")
    p.add_argument("--fid-steps", type=int, default=100, help="SGLD steps from noise per sample")
    p.add_argument("--name", default="vision_cpu", help="file name of the table")
    args = p.parse_args(argv)
    if args.ood_root is not None:  # the subprocesses look for MNIST (and sets without --data-root) there
        args.extra_env = {"GEDI_DATA_ROOT": str(args.ood_root)}
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Path(args.runs).mkdir(parents=True, exist_ok=True)

    trained = collect(args, lambda folder, m: {k: m[k] for k in ("nmi", "acc", "seconds")})
    rows: list[dict[str, Any]] = []
    table = []
    for dataset in args.datasets:
        # the held-out images and the training pool, loaded once and only if a cache below misses
        load_data = functools.cache(lambda: load_dataset(DataConfig(  # noqa: B023 (called in this iteration)
            name=dataset, data_root=args.data_root, validation=args.validation or 0.0), 0))
        features, clf_acc = fid_extractor(args, dataset, load_data)
        fid_args = ["--ood-dataset", args.ood, "--fid-samples", str(args.fid_samples), "--fid-steps",
                    str(args.fid_steps), "--fid-features", str(features)]
        folders = [run_dir(args, dataset, m, s) for m in args.methods for s in args.seeds
                   if (run_dir(args, dataset, m, s) / "metrics.json").is_file()]
        keys = ["probe_test_acc", f"ood_auroc_logp_{args.ood}", "fid"]

        def evaluate(folder: Path) -> dict[str, Any]:
            wanted = keys + ["fid_buffer"] * has_replay_buffer(folder)
            return ensure_eval(args, folder, "probe,ood,fid,samples", wanted, fid_args)

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each evaluation is a subprocess
            evals = dict(zip(folders, pool.map(evaluate, folders)))
        ref = references(args, dataset, features, load_data)
        table.append({"method": "k-means on raw pixels", "NMI": cell(ref["nmi"]), "ACC": cell(ref["acc"]),
                      "OOD AUROC -E": "—", "OOD AUROC -‖∇E‖": "—", "linear probe": "—",
                      "FID from noise": "—", "FID from buffer": "—", "min/run": "—"})
        for method in args.methods:
            vals: dict[str, list[float]] = {}
            for seed in args.seeds:
                folder = run_dir(args, dataset, method, seed)
                if folder not in evals:
                    continue
                metrics, ev = json.loads((folder / "metrics.json").read_text()), evals[folder]
                row = {"dataset": dataset, "method": method, "seed": seed, "evaluated_on": metrics["evaluated_on"],
                       "nmi": metrics["nmi"], "acc": metrics["acc"], "ood_auroc_energy": ev[f"ood_auroc_logp_{args.ood}"],
                       "ood_auroc_grad_norm": ev[f"ood_auroc_grad_norm_{args.ood}"],
                       "probe_acc": ev["probe_test_acc"], "fid": ev["fid"], "fid_buffer": ev.get("fid_buffer"),
                       "minutes": metrics["seconds"] / 60,
                       "final_prior_gap": metrics.get("final_prior_gap"), "final_inv_gap": metrics.get("final_inv_gap"),
                       "final_max_cluster_share": metrics.get("final_max_cluster_share"),
                       "run": shown_path(folder.resolve())}
                rows.append(row)
                for k in ("nmi", "acc", "ood_auroc_energy", "ood_auroc_grad_norm", "probe_acc", "fid", "fid_buffer",
                          "minutes"):
                    if row[k] is not None:
                        vals.setdefault(k, []).append(float(row[k]))
            table.append({"method": LABELS[method], "NMI": cell(vals.get("nmi", [])), "ACC": cell(vals.get("acc", [])),
                          "OOD AUROC -E": cell(vals.get("ood_auroc_energy", [])),
                          "OOD AUROC -‖∇E‖": cell(vals.get("ood_auroc_grad_norm", [])),
                          "linear probe": cell(vals.get("probe_acc", [])), "FID from noise": cell(vals.get("fid", []), 1),
                          "FID from buffer": cell(vals.get("fid_buffer", []), 1),
                          "min/run": cell(vals.get("minutes", []), 1)})
        sample_figure(args, dataset, out / f"{args.name}_samples.png", load_data)
    write_outputs(args, out, rows, table, clf_acc, ref, time.time() - t0, len(trained))
    return 0


def write_outputs(args: Any, out: Path, rows: list[dict[str, Any]], table: list[dict[str, Any]], clf_acc: float,
                  ref: dict[str, list[float]], seconds: float, cells: int) -> None:
    from gedi_core.runfolder import write_csv, write_text

    split = "validation split (10% of the training images held out)" if args.validation else "test split"
    lines = [
        f"## CPU-scale Table 4: {', '.join(args.datasets)}, every method, {seeds_text(args)}", "",
        f"Command: `{shown_command('experiments.vision.cpu', sys.argv[1:] if __name__ == '__main__' else [])}`", "",
        *markdown_table(table), "",
        f"Each cell: median (mean ± sample std) over {seeds_text(args)}, evaluated on the {split}. "
        f"NMI/ACC: head argmax (k-means on the features for Barlow Twins). OOD AUROC against {args.ood} "
        f"(in-distribution images positive). FID: {args.fid_samples} samples after {args.fid_steps} SGLD steps "
        f"from U(-1, 1) noise, or from the replay buffer's chains (methods with L_GEN), against as many held-out "
        f"images, in the 128-d feature space of a small CNN trained with labels on the training split "
        f"(held-out accuracy {clf_acc:.3f}); comparable only within this table: the U(-1, 1) noise itself scores "
        f"{ref['fid_noise'][0]:.1f}, {args.fid_samples} real training images {ref['fid_real'][0]:.1f}. "
        f"min/run: training minutes of one run on one thread (two runs shared the two cores). "
        f"Configs: experiments/configs/vision_cpu/. Wall time of this command {seconds / 60:.1f} min "
        f"({cells} cells).",
    ]
    write_text(out / f"{args.name}.md", "\n".join(lines) + "\n")
    write_csv(out / f"{args.name}.csv", table)
    write_csv(out / f"{args.name}_runs.csv", rows)
    print("\n".join(lines))
    print(f"written: {out / (args.name + '.md')}, {args.name}.csv, {args.name}_runs.csv, {args.name}_samples.png")


if __name__ == "__main__":
    sys.exit(main())
