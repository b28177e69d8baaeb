"""DeepProbLog's MNIST-addition script as shipped against its GEDI port, over budgets and seeds.

Each run is one call of ``experiments.nesy.deepproblog_script`` (DeepProbLog's own
``examples/MNIST/addition.py``, offline) in a process of its own; its JSON line is kept in
``OUT/runs/<port>_N<digits>_p<pairs>_b<batch>_e<epochs>_s<seed>.json``, so a killed study resumes
and a finished run is never redone. The table (``OUT/table.md``, ``OUT/runs.csv``) gives per
budget and port the median (mean ± sample std) of the digit and sum accuracy over the seeds and
every seed's figure.

    python -m experiments.nesy.deepproblog_study --data-root ../shared/data/MNIST/raw --validation 0.1 \\
        --budgets 1:1000:2:1 --seeds 0,1,2 --out runs/dpl_select         # choosing: validation pool
    python -m experiments.nesy.deepproblog_study --data-root ../shared/data/MNIST/raw \\
        --budgets 1:100:2:1,1:1000:2:1,1:4000:2:1,1:1000:32:5,2:1000:2:1 --seeds 10,11,12,13,14 --out runs/dpl_final

A budget is ``N:PAIRS:BATCH:EPOCHS`` (digits per number, training queries, batch size, epochs).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gedi_core.runfolder import write_text

from experiments.common.reporting import REPO, markdown_table, seed_summary, shown_command, shown_path

SCRIPT = "experiments.nesy.deepproblog_script"  # run as python -m SCRIPT, with the repository on the path
PORTS = {"none": "DeepProbLog as shipped (MNIST_Net, ExactEngine)",
         "engine": "DeepProbLog's script with BatchedEngine (MNIST_Net, DeepProbLog's train_model)",
         "gedi-off": "port, GEDI terms off (gedi_network(MNIST_Net()), BatchedEngine)",
         "gedi": "port (gedi_network(MNIST_Net()), BatchedEngine, train_model's GEDI terms)"}


def run_name(port: str, budget: tuple[int, int, int, int], seed: int) -> str:
    n, pairs, batch, epochs = budget
    return f"{port}_N{n}_p{pairs}_b{batch}_e{epochs}_s{seed}"


def run_one(args: argparse.Namespace, port: str, budget: tuple[int, int, int, int], seed: int) -> dict:
    """One run (or its kept result): the script's JSON line, written atomically."""
    path = Path(args.out) / "runs" / f"{run_name(port, budget, seed)}.json"
    if path.is_file():
        kept = json.loads(path.read_text())
        asked = {key: getattr(args, key) if port == "gedi" else "" for key in ("gedi", "train_args")}  # gedi port only
        differ = [k for k, v in asked.items() if (kept.get(k) or "") != v]
        if differ:
            raise SystemExit(f"{path}: this run was made with other {' and '.join('--' + k.replace('_', '-') for k in differ)} "
                             f"({', '.join(repr(kept.get(k) or '') for k in differ)}); use another --out")
        return kept
    n, pairs, batch, epochs = budget
    cmd = [sys.executable, "-m", SCRIPT, "--data-root", args.data_root, "--port", port, "--digits", str(n),
           "--pairs", str(pairs), "--batch-size", str(batch), "--epochs", str(epochs), "--seed", str(seed),
           "--split-seed", str(args.split_seed), "--validation", str(args.validation),
           "--test-pairs", str(args.test_pairs)]
    if port == "gedi" and args.gedi:
        cmd += ["--gedi", args.gedi]
    if port == "gedi" and args.train_args:
        cmd += ["--train-args", args.train_args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"run {path.stem} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(result) + "\n")
    print(json.dumps(result), flush=True)
    return result


def parse_budgets(text: str) -> list[tuple[int, int, int, int]]:
    budgets = []
    for item in text.split(","):
        parts = item.split(":")
        if len(parts) != 4 or not all(p.isdigit() for p in parts):
            raise SystemExit(f"--budgets: '{item}' is not N:PAIRS:BATCH:EPOCHS")
        budgets.append(tuple(int(p) for p in parts))
    return budgets


def write_table(args: argparse.Namespace, results: list[dict], argv: list[str]) -> None:
    out = Path(args.out)
    keys = ["port", "digits", "pairs", "batch", "epochs", "seed", "digit_acc", "sum_acc", "seconds", "evaluated_on",
            "train_nesy", "starts"]
    with open(out / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    rows = []
    for budget in parse_budgets(args.budgets):
        for port in args.ports.split(","):
            runs = [r for r in results if (r["digits"], r["batch"], r["epochs"]) == (budget[0], *budget[2:])
                    and budget[1] in (0, r["pairs"]) and r["port"] == port]  # pairs 0: all the pool gives
            if not runs:
                continue
            rows.append({"N": budget[0], "pairs": budget[1], "batch": budget[2], "epochs": budget[3],
                         "script": PORTS[port],
                         "digit accuracy": seed_summary([r["digit_acc"] for r in runs]),
                         "sum accuracy": seed_summary([r["sum_acc"] for r in runs]),
                         "every seed (digit)": " / ".join(f"{r['digit_acc']:.3f}" for r in runs),
                         "s / run": f"{sum(r['seconds'] for r in runs) / len(runs):.0f}"})
    pool = "validation pool (carved from the training pool)" if args.validation > 0 else "test pool"
    header = [f"# DeepProbLog's MNIST-addition script: as shipped and ported to GEDI", "",
              f"Command: `{shown_command('experiments.nesy.deepproblog_study', argv)}`", "",
              f"Data: MNIST test split t10k from `{shown_path(args.data_root)}`, split (seed {args.split_seed}) into "
              f"8000 training and 2000 test images; evaluated on the {pool}. Seeds: {args.seeds}. "
              f"Each cell: median (mean ± sample std) over the seeds; digit accuracy of the trained network on "
              f"every held-out image, sum accuracy of the script's own get_confusion_matrix on its first "
              f"{args.test_pairs or 'all'} test queries. "
              f"One thread per run.", ""]
    (out / "table.md").write_text("\n".join(header + markdown_table(rows)) + "\n")
    print("\n".join(markdown_table(rows)))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--budgets", default="1:1000:2:1", help="N:PAIRS:BATCH:EPOCHS, comma-separated")
    ap.add_argument("--ports", default="none,gedi-off,gedi", help=f"comma-separated of {', '.join(PORTS)}")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--validation", type=float, default=0.0)
    ap.add_argument("--gedi", default="", help="GEDILoss arguments for the gedi port (default: its defaults)")
    ap.add_argument("--train-args", default="", help="more gedi_nesy.train_model arguments for the gedi port, "
                                                     "e.g. 'rename_every=0'")
    ap.add_argument("--test-pairs", type=int, default=0, help="test queries of the sum accuracy (0: all)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    for port in args.ports.split(","):
        if port not in PORTS:
            raise SystemExit(f"--ports: unknown port '{port}' (known: {', '.join(PORTS)})")
    jobs = [(port, budget, int(seed)) for budget in parse_budgets(args.budgets)
            for seed in args.seeds.split(",") for port in args.ports.split(",")]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda job: run_one(args, *job), jobs))
    write_table(args, results, argv)


if __name__ == "__main__":
    main()
