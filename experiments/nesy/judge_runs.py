"""The label-free losses a restart can be judged by, for finished gedi-nesy run folders, beside
the digit accuracy they were meant to predict: where to place ``--restart-above``.

For each run: its evaluated digit and cluster accuracy (from ``metrics.json``), the training
``L_NESY`` of its final network (``train_nesy``) and the same queries scored through the pool's
neighbours (``neighbour_nesy``, :func:`gedi_nesy.restarts.neighbour_nesy`, ``k`` nearest pool
images outside the queries) and the share of those queries false as the neighbours read them
(``neighbour_errors``, :func:`gedi_nesy.restarts.neighbour_errors`). The runs are rebuilt from
their folders (config, program, pools) and nothing is trained or written.

    python -m experiments.nesy.judge_runs runs/v100/select/mnist_n100_gedi_nesy_s*
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from experiments.common.reporting import markdown_table


def judge(run: Path, ks: list[int]) -> dict:
    from gedi_nesy.predict import load_run_weights, run_config
    from gedi_nesy.restarts import neighbour_errors, neighbour_nesy, training_nesy
    from gedi_nesy.run_setup import prepare

    cfg, state = run_config(run)
    pools, model, train_q, _ = prepare(cfg, quiet=True)
    load_run_weights(dict(model.networks), state, str(run))
    metrics = json.loads((run / "metrics.json").read_text())
    return {"run": run.name, "digit_acc": round(metrics["digit_acc"], 4),
            "cluster_acc": round(metrics.get("cluster_acc", float("nan")), 4),
            "train_nesy": round(training_nesy(model, train_q), 4),
            **{f"neighbour_nesy k={k}": round(neighbour_nesy(model, train_q, pools.train_x, k), 4) for k in ks},
            **{f"neighbour_errors k={k}": round(neighbour_errors(model, train_q, pools.train_x, k), 4) for k in ks},
            **{f"expected errors k={k}": round(neighbour_errors(model, train_q, pools.train_x, k, hard=False), 4)
               for k in ks}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="finished run folders (metrics.json and checkpoint.pt)")
    ap.add_argument("--k", default="5", help="neighbours, comma-separated (default 5)")
    args = ap.parse_args(argv)
    runs = [Path(r) for r in args.runs]
    unfinished = [str(r) for r in runs if not (r / "metrics.json").is_file()]
    if unfinished:
        print(f"judge_runs: not finished runs: {', '.join(unfinished)}", file=sys.stderr)
        return 2
    try:
        ks = [int(k) for k in args.k.split(",")]
    except ValueError:
        print(f"judge_runs: --k {args.k}: give whole numbers, comma-separated", file=sys.stderr)
        return 2
    rows = sorted((judge(r, ks) for r in runs), key=lambda row: row["digit_acc"])
    print("\n".join(markdown_table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
