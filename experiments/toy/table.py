"""Paper Tables 2 and 3: every method on moons and circles over several seeds.

    python -m experiments.toy.table --seeds 5 --jobs 2 --out runs/toy_table

Each run goes to ``OUT/<dataset>/<method>/seed<k>/`` (finished runs are skipped, so a killed
table resumes); the table of mean ± std test NMI is written as ``OUT/table.md`` and
``OUT/table.csv`` with the wall time in the footer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import as_completed
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from experiments.common.reporting import REPO
from experiments.common.workers import worker_pool

CONFIGS = REPO / "experiments" / "configs" / "toy"
METHODS = ["gedi", "gedi_no_gen", "gedi_no_inv", "gedi_no_prior", "jem", "swav", "barlow"]
DATASETS = ["moons", "circles"]
PAPER = {  # paper Tables 2-3, NMI mean ± std (moons, circles)
    "gedi": ("0.94 ± 0.07", "1.00 ± 0.01"),
    "gedi_no_gen": ("0.98", "0.83"),
    "gedi_no_inv": ("0.11", "0.22"),
    "gedi_no_prior": ("0.00", "0.00"),
    "jem": ("0.00", "0.00"),
    "swav": ("0.76", "0.00"),
    "barlow": ("0.22", "0.13"),
}


def run_one(dataset: str, method: str, seed: int, out: str, overrides: list[str]) -> dict:
    """One run in a worker process (one thread each), via the same CLI a user runs."""
    import torch

    torch.set_num_threads(1)
    from gedi_core.cli import build_parser, resolve_train_config
    from gedi_core.train import train

    run_dir = Path(out) / dataset / method / f"seed{seed}"
    done = run_dir / "metrics.json"
    if done.exists():
        return json.loads(done.read_text())
    argv = ["train", "--config", str(CONFIGS / f"{dataset}.yaml"), "--method", method, "--seed", str(seed)]
    per_method = (yaml.safe_load((CONFIGS / "overrides.yaml").read_text()) or {}).get(dataset) or {}
    for key, value in (per_method.get(method) or {}).items():
        argv += ["--set", f"{key}={value}"]
    for item in overrides:
        argv += ["--set", item]
    args = build_parser().parse_args(argv)
    return train(resolve_train_config(args), out=run_dir, resume=(run_dir / "checkpoint.pt").is_file(),
                 progress=False)


def summarise(results: list[dict], out: Path, wall: float, seeds: int, note: str) -> str:
    rows, lines = [], []
    header = "| method | moons NMI | circles NMI | paper moons | paper circles |"
    lines += [header, "|---|---|---|---|---|"]
    for method in METHODS:
        cells = []
        for dataset in DATASETS:
            vals = [r["nmi"] for r in results if r["method"] == method and r["dataset"] == dataset]
            mean, std = (float(np.mean(vals)), float(np.std(vals))) if vals else (float("nan"), float("nan"))
            rows.append({"method": method, "dataset": dataset, "nmi_mean": round(mean, 4), "nmi_std": round(std, 4),
                         "runs": len(vals), "nmi_runs": " ".join(f"{v:.3f}" for v in vals)})
            cells.append(f"{mean:.2f} ± {std:.2f}")
        lines.append(f"| {method} | {cells[0]} | {cells[1]} | {PAPER[method][0]} | {PAPER[method][1]} |")
    footer = f"\nTest NMI, mean ± std over {seeds} seeds. {note} Wall time: {wall / 60:.1f} min on {os.cpu_count()} CPU cores.\n"
    text = "\n".join(lines) + "\n" + footer
    (out / "table.md").write_text(text)
    import csv

    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2, help="parallel worker processes (one thread each)")
    parser.add_argument("--out", default="runs/toy_table")
    parser.add_argument("--methods", nargs="*", default=METHODS, choices=METHODS)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key for every run, e.g. iters=3000")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(d, m, s) for d in DATASETS for m in args.methods for s in range(args.seeds)]
    t0 = time.time()
    results = []
    with worker_pool(args.jobs) as pool:
        futures = {pool.submit(run_one, d, m, s, str(out), args.set): (d, m, s) for d, m, s in jobs}
        for fut in tqdm(as_completed(futures), total=len(futures), desc="toy table"):
            res = fut.result()
            results.append(res)
            tqdm.write(f"{res['dataset']:8s} {res['method']:14s} seed {res['seed']}: NMI {res['nmi']:.3f}")
    note = "Settings: experiments/configs/toy/<dataset>.yaml and overrides.yaml" + (
        f", with {', '.join(args.set)}." if args.set else ".")
    print(summarise(results, out, time.time() - t0, args.seeds, note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
