"""Shared machinery of the vision table commands (``experiments.vision.table*``).

Each run lives in ``RUNS/<dataset>/<method>/seed<k>/`` and is trained with the same command a
user types (``python -m gedi_core train --config experiments/configs/vision/<dataset>_<method>.yaml``,
or ``torchrun --nproc_per_node=N -m gedi_core train ...`` with ``--nproc N``). Finished runs
(``metrics.json`` present) are reused and killed ones resumed, so a table command can be rerun
at any time; ``--no-train`` only collects what exists; ``--jobs K`` trains K missing runs at once.
Evaluations go through ``gedi-core eval`` and are cached in each run's ``eval.json``. Tables are
written as Markdown and CSV, each cell the median (mean ± sample std) over the seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable

from experiments.common.reporting import REPO, seed_summary

CONFIGS = REPO / "experiments" / "configs" / "vision"
METHODS = ["gedi", "gedi_no_gen", "jem", "barlow", "swav"]
DATASETS = ["svhn", "cifar10", "cifar100"]
LABELS = {"gedi": "GEDI", "gedi_no_gen": "GEDI no gen", "jem": "JEM", "barlow": "Barlow Twins", "swav": "SwAV"}


def parser(doc: str, datasets: list[str] = DATASETS) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/vision", help="folder of the runs (RUNS/<dataset>/<method>/seed<k>)")
    p.add_argument("--out", default=None, help="where the table goes (default: RUNS/tables)")
    p.add_argument("--datasets", nargs="*", default=datasets, help="data sets (default: the paper's)")
    p.add_argument("--methods", nargs="*", default=METHODS, choices=METHODS)
    p.add_argument("--seeds", type=seed_list, default=[0],
                   help="seeds per cell: N (seeds 0..N-1) or a comma list such as 10,11,12 (one seed: 3,)")
    p.add_argument("--configs", type=Path, default=CONFIGS,
                   help="folder of the run configs <dataset>_<method>.yaml (default: the paper's)")
    p.add_argument("--validation", type=float, default=None, metavar="F",
                   help="choosing settings: hold out F of the training split and evaluate there (test split unread)")
    p.add_argument("--jobs", type=int, default=1, help="train this many missing runs at once (one thread each)")
    p.add_argument("--no-train", action="store_true", help="only collect finished runs; do not train missing ones")
    p.add_argument("--nproc", type=int, default=1, help="train each run with torchrun on N processes (GPUs)")
    p.add_argument("--device", default=None, help="torch device for training and evaluation (cpu, cuda)")
    p.add_argument("--data-root", default=None, help="folder with the data files (torchvision layout)")
    p.add_argument("--download", action="store_true", help="let torchvision download missing data sets")
    p.add_argument("--test-subset", type=int, default=None, help="evaluate on the first N test images only")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every training run, e.g. epochs=3 or data.train_subset=2000")
    return p


def seed_list(text: str) -> list[int]:
    """``"5"`` -> seeds 0..4; ``"10,11,12"`` -> those seeds."""
    try:
        seeds = [int(t) for t in text.split(",") if t.strip()] if "," in text else list(range(int(text)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or a comma list of seeds, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"expected N >= 1 or non-negative seeds, got {text!r}")
    return seeds


def seeds_text(args: argparse.Namespace) -> str:
    """How a table's footer names its seeds."""
    return f"seed(s) {','.join(map(str, args.seeds))}"


def run_dir(args: argparse.Namespace, dataset: str, method: str, seed: int) -> Path:
    return Path(args.runs) / dataset / method / f"seed{seed}"


def _run(cmd: list[str], log: Path | None = None, extra_env: dict[str, str] | None = None) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **(extra_env or {})}
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as f:
            f.write("$ " + " ".join(cmd) + "\n" + proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")


def ensure_trained(args: argparse.Namespace, dataset: str, method: str, seed: int) -> dict[str, Any] | None:
    """The run's metrics.json, training (or resuming) it first unless ``--no-train``."""
    folder = run_dir(args, dataset, method, seed)
    done = folder / "metrics.json"
    if done.exists():
        return json.loads(done.read_text())
    if args.no_train:
        return None
    config = Path(args.configs) / f"{dataset}_{method}.yaml"
    launcher = ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.nproc}"]
                if args.nproc > 1 else [sys.executable])
    cmd = [*launcher, "-m", "gedi_core", "train", "--config", str(config), "--seed", str(seed),
           "--out", str(folder), "--no-progress", *(["--resume"] if (folder / "checkpoint.pt").is_file() else [])]
    cmd += passed_on(args, "--device", "--data-root", "--validation")
    for item in args.set:
        cmd += ["--set", item]
    t0 = time.time()
    _run(cmd, folder / "train.log", getattr(args, "extra_env", None))
    metrics = json.loads(done.read_text())
    print(f"  {dataset}/{method}/seed{seed}: NMI {metrics['nmi']:.3f} in {time.time() - t0:.0f} s", flush=True)
    return metrics


def passed_on(args: argparse.Namespace, *flags: str) -> list[str]:
    """The study's ``flags`` that were given, and ``--download``, as arguments of a gedi-core command."""
    out: list[str] = []
    for flag in flags:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            out += [flag, str(value)]
    return out + (["--download"] if args.download else [])


def ensure_eval(args: argparse.Namespace, folder: Path, what: str, keys: Iterable[str],
                extra: list[str] | None = None) -> dict[str, Any]:
    """The run's eval.json, running ``gedi-core eval --what WHAT`` when any of ``keys`` is missing."""
    path = folder / "eval.json"
    have = json.loads(path.read_text()) if path.exists() else {}
    if all(k in have for k in keys):
        return have
    cmd = [sys.executable, "-m", "gedi_core", "eval", "--run", str(folder), "--what", what, "--no-progress"]
    cmd += passed_on(args, "--device", "--data-root", "--test-subset")
    _run(cmd + (extra or []), folder / "eval.log", getattr(args, "extra_env", None))
    return json.loads(path.read_text())


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value; NaN for none)."""
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def cell(values: list[float], digits: int = 3) -> str:
    """``median (mean ± sample std)`` over the seeds, the value itself for one seed, ``—`` for none."""
    if not values:
        return "—"
    return f"{values[0]:.{digits}f}" if len(values) == 1 else seed_summary(values, digits)


def collect(args: argparse.Namespace, value: Callable[[Path, dict[str, Any]], dict[str, float]],
            ) -> dict[tuple[str, str], dict[str, list[float]]]:
    """For every dataset x method x seed: train if needed (``--jobs`` at once), then
    ``value(run_folder, metrics)``."""
    cells = [(d, m, s) for d in args.datasets for m in args.methods for s in args.seeds]
    missing = [c for c in cells if not (run_dir(args, *c) / "metrics.json").exists()]
    if missing and not args.no_train and args.jobs > 1:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each job is a subprocess
            list(pool.map(lambda c: ensure_trained(args, *c), missing))
    out: dict[tuple[str, str], dict[str, list[float]]] = {}
    for dataset in args.datasets:
        for method in args.methods:
            cellvals: dict[str, list[float]] = {}
            for seed in args.seeds:
                metrics = ensure_trained(args, dataset, method, seed)
                if metrics is None:
                    continue
                for k, v in value(run_dir(args, dataset, method, seed), metrics).items():
                    cellvals.setdefault(k, []).append(float(v))
            out[(dataset, method)] = cellvals
    return out


def write_table(args: argparse.Namespace, name: str, title: str, header: list[str], rows: list[list[str]],
                csv_rows: list[dict[str, Any]], footer: str) -> str:
    out = Path(args.out) if args.out else Path(args.runs) / "tables"
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    overrides = f" Overrides: {', '.join(args.set)}." if args.set else ""
    text = "\n".join(lines) + f"\n\n{footer}{overrides}\n"
    (out / f"{name}.md").write_text(text)
    keys: list[str] = []
    for r in csv_rows:
        keys.extend(k for k in r if k not in keys)
    with open(out / f"{name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(csv_rows)
    print(text)
    print(f"written: {out / (name + '.md')}, {out / (name + '.csv')}")
    return text


def ood_table(doc: str, name: str, in_dist: str, ood: list[str], title: str, argv: list[str] | None = None) -> int:
    """Tables 5, 11, 12: OOD AUROC of ``s(x) = -||dE/dx||`` with ``in_dist`` as training set."""
    p = parser(doc, [in_dist])
    p.add_argument("--ood", nargs="*", default=ood, help="out-of-distribution data sets (their test splits)")
    args = p.parse_args(argv)
    t0 = time.time()
    keys = [f"ood_auroc_grad_norm_{o}" for o in args.ood] + [f"ood_auroc_logp_{o}" for o in args.ood]
    extra = [a for o in args.ood for a in ("--ood-dataset", o)]
    vals = collect(args, lambda folder, m: {k: v for k, v in ensure_eval(args, folder, "ood", keys, extra).items()
                                             if k in keys})
    header = ["method"] + [f"{d} vs {o}" for d in args.datasets for o in args.ood]
    rows, csv_rows = [], []
    for method in args.methods:
        row = [LABELS[method]]
        for d in args.datasets:
            for o in args.ood:
                v = vals.get((d, method), {}).get(f"ood_auroc_grad_norm_{o}", [])
                w = vals.get((d, method), {}).get(f"ood_auroc_logp_{o}", [])
                row.append(cell(v))
                m, s = mean_std(v)
                m2, _ = mean_std(w)
                csv_rows.append({"method": method, "in_dist": d, "ood": o, "auroc_grad_norm_mean": round(m, 4),
                                 "auroc_grad_norm_std": round(s, 4), "auroc_logp_mean": round(m2, 4), "runs": len(v)})
        rows.append(row)
    if args.datasets != [in_dist] or args.ood != ood:  # overridden: say what was actually run
        title = f"{title.split(':')[0]}: OOD detection, in-distribution {', '.join(args.datasets)} (AUROC)"
    footer = (f"AUROC of s(x) = -||d log p(x)/dx|| (in-distribution test split = positives); the CSV also has "
              f"the AUROC of -E(x). Median (mean ± sample std) over {seeds_text(args)}. "
              f"Wall time {(time.time() - t0) / 60:.1f} min.")
    write_table(args, name, title, header, rows, csv_rows, footer)
    return 0
