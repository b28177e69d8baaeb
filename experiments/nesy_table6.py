"""Paper Table 6: MNIST addition (three images, ``C is A + B``) with GEDI as the neural predicate.

Runs the three arms (nesy, gedi, gedi+nesy) for each number of training examples over
several seeds and writes the table (median ± std of test digit accuracy and NMI, query
accuracy, wall time, training throughput) as Markdown and CSV, plus one CSV row per run.

    python experiments/nesy_table6.py --data mnist --data-root ../shared/data/MNIST/raw \\
        --sizes 100,1000 --seeds 0,1,2 --out runs/table6
    python experiments/nesy_table6.py --data digits --sizes 100 --seeds 0,1,2 --epochs 20 --out runs/table6_digits

Every run is a gedi-nesy run folder under ``--out`` (config, log, checkpoint, metrics); a run
whose metrics.json exists is reused, an interrupted one resumes from its checkpoint.
Sizes the data cannot supply (the pool runs out of a digit) are reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gedi_core.config import parse_set, dotted_to_nested, read_config_file  # noqa: E402
from gedi_core.errors import GediError  # noqa: E402
from gedi_core.runfolder import write_csv, write_text  # noqa: E402
from gedi_nesy.cli import prepare  # noqa: E402
from gedi_nesy.config import build_nesy_config  # noqa: E402
from gedi_nesy.train import train_nesy  # noqa: E402

PAPER = {  # paper Table 6 (GEDI & NeSy; NeSy only; GEDI only), test digit accuracy / NMI
    (100, "gedi+nesy"): "0.42 / 0.35",
    (1000, "gedi+nesy"): "0.96 / 0.91",
    (100, "nesy"): "0.10 / 0.00",
    (1000, "nesy"): "0.10 / 0.00",
    (100, "gedi"): "~0.10 / 0.22-0.44",
    (1000, "gedi"): "~0.10 / 0.22-0.44",
}


def fmt(values: list[float]) -> str:
    """``median (mean ± sample std)`` over the seeds; every seed's value is in runs.csv."""
    if not values:
        return "-"
    med, mean = statistics.median(values), statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{med:.3f} ({mean:.3f} ± {std:.3f})"


def run_name(data: str, n: int, arm: str, seed: int) -> str:
    return f"{data}_n{n}_{arm.replace('+', '_')}_s{seed}"


def run_one(n: int, arm: str, seed: int, settings: dict) -> dict:
    """Train (or reuse / resume) one run folder and return its table row."""
    torch.set_num_threads(settings["threads"])
    run_dir = Path(settings["out"]) / run_name(settings["data"], n, arm, seed)
    flags = {"arm": arm, "seed": seed, "epochs": settings["epochs"],
             "data": {"name": settings["data"], "data_root": settings["data_root"], "examples": n}}
    try:
        cfg = build_nesy_config([(settings["config"], settings["base"]), ("flags", flags),
                                 ("--set", dotted_to_nested(parse_set(settings["sets"])))])
        if (run_dir / "metrics.json").is_file():
            metrics = json.loads((run_dir / "metrics.json").read_text())
        else:
            t0 = time.time()
            pools, model, train_q, test_q = prepare(cfg, quiet=True)
            metrics = train_nesy(cfg, model, train_q, pools, test_q, out=run_dir,
                                 resume=(run_dir / "checkpoint.pt").is_file(),
                                 progress=settings["progress"])
            metrics["wall_seconds"] = round(time.time() - t0, 2)
    except GediError as exc:
        print(f"skip n={n} {arm} seed {seed}: {exc}", file=sys.stderr)
        return {"examples": n, "arm": arm, "seed": seed, "skipped": str(exc)}
    return {"examples": n, "arm": arm, "seed": seed, "epochs": metrics["epochs"],
            **{k: metrics.get(k) for k in ("digit_acc", "nmi", "cluster_acc", "query_acc", "max_cluster_share",
                                           "seconds", "train_seconds", "queries_per_s")},
            "data_note": metrics.get("data_note", "")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="mnist", help="mnist | digits")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--sizes", default="100,1000,10000", help="training examples, comma-separated")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--arms", default="nesy,gedi,gedi+nesy")
    ap.add_argument("--epochs", type=int, default=0, help="0: paper defaults (500/100/25)")
    ap.add_argument("--config", default=str(REPO / "experiments/configs/nesy/table6.yaml"))
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config key")
    ap.add_argument("--out", default="runs/table6")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--report-only", action="store_true",
                    help="write the table from the finished runs under --out; train nothing")
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at once (processes; one per core)")
    ap.add_argument("--progress", action="store_true", help="progress bars (with --jobs 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    base = read_config_file(args.config) if args.config else {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(n, arm, seed) for n in [int(s) for s in args.sizes.split(",")]
            for arm in args.arms.split(",") for seed in [int(s) for s in args.seeds.split(",")]]
    order = {job: i for i, job in enumerate(jobs)}
    settings = dict(config=str(args.config), base=base, sets=args.set, data=args.data, data_root=args.data_root,
                    epochs=args.epochs, out=str(out), threads=args.threads,
                    progress=args.progress and args.jobs == 1)
    runs: list[dict] = []

    def record(row: dict) -> None:
        runs.append(row)
        runs.sort(key=lambda r: order[(r["examples"], r["arm"], r["seed"])])
        print(json.dumps(row), flush=True)
        write_csv(out / "runs.csv", runs)

    if args.report_only:
        for job in jobs:
            run_dir = out / run_name(args.data, *job)
            if (run_dir / "metrics.json").is_file():
                record(run_one(*job, settings))
            else:
                print(f"not run: {run_dir}", file=sys.stderr)
    elif args.jobs == 1:
        for job in jobs:
            record(run_one(*job, settings))
    else:  # largest runs first, so that the pool ends together
        by_cost = sorted(jobs, key=lambda j: (j[1] == "nesy", -j[0]))
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(run_one, *job, settings) for job in by_cost]
            for fut in as_completed(futures):
                record(fut.result())

    table: list[dict] = []
    for n in dict.fromkeys(r["examples"] for r in runs):
        for arm in dict.fromkeys(r["arm"] for r in runs):
            done = [r for r in runs if r["examples"] == n and r["arm"] == arm and "skipped" not in r]
            if not done:
                table.append({"examples": n, "arm": arm, "digit_acc": "skipped (data too small)", "nmi": "-",
                              "query_acc": "-", "seconds": "-", "queries_per_s": "-", "seeds": 0,
                              "paper (acc / NMI)": PAPER.get((n, arm), "-")})
                continue
            table.append({
                "examples": n, "arm": arm,
                "digit_acc": fmt([r["digit_acc"] for r in done]),
                "nmi": fmt([r["nmi"] for r in done]),
                "query_acc": fmt([r["query_acc"] for r in done if r["query_acc"] is not None]),
                "seconds": f"{statistics.median(r['seconds'] for r in done):.0f}",
                "queries_per_s": f"{statistics.median(r['queries_per_s'] for r in done):.1f}",
                "epochs": done[0]["epochs"], "seeds": len(done),
                "paper (acc / NMI)": PAPER.get((n, arm), "-"),
            })
    write_csv(out / "table6.csv", table)
    keys = list(table[0]) if table else []
    note = next((r["data_note"] for r in runs if r.get("data_note")), "")
    lines = [f"# Table 6: MNIST addition ({args.data})", "", f"Data: {note}", "",
             f"Seeds: {', '.join(str(x) for x in sorted({r['seed'] for r in runs if 'skipped' not in r}))}. Median (mean ± sample std) over seeds of test digit accuracy (no matching) "
             "and NMI; every seed's figure is in runs.csv. Wall seconds per run (median); training throughput "
             "in queries/s.", "",
             "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row.get(k, "")) for k in keys) + " |" for row in table]
    write_text(out / "table6.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
