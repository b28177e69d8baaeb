"""The label-free losses a restart can be judged by, for finished gedi-nesy run folders, beside
the digit accuracy they were meant to predict: where to place ``--restart-above``.

For each run: its evaluated digit and cluster accuracy (from ``metrics.json``), the training
``L_NESY`` of its final network (``train_nesy``) and the same queries scored through the pool's
neighbours (``neighbour_nesy``, :func:`gedi_nesy.restarts.neighbour_nesy`, ``k`` nearest pool
images outside the queries) and the share of those queries false as the neighbours read them
(``neighbour_errors``, :func:`gedi_nesy.restarts.neighbour_errors`). The runs are rebuilt from
their folders (config, program, pools) and nothing is trained or written. With
``--agreement``, also how alike every two runs read the same images (Cohen's kappa,
:func:`gedi_nesy.restarts.agreement`, what ``--restart-agree`` judges by).

    python -m experiments.nesy.judge_runs runs/v100/select/mnist_n100_gedi_nesy_s* --agreement
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from experiments.common.reporting import markdown_table


def rebuilt(run: Path):
    """The run's pools, model (with its final weights) and training queries, from its folder."""
    from gedi_nesy.predict import load_run_weights, run_config
    from gedi_nesy.run_setup import prepare

    cfg, state = run_config(run)
    pools, model, train_q, _ = prepare(cfg, quiet=True)
    load_run_weights(dict(model.networks), state, str(run))
    return pools, model, train_q


def judge(run: Path, pools, model, train_q, ks: list[int]) -> dict:
    from gedi_nesy.restarts import neighbour_errors, neighbour_nesy, training_nesy

    metrics = json.loads((run / "metrics.json").read_text())
    return {"run": run.name, "digit_acc": round(metrics["digit_acc"], 4),
            "cluster_acc": round(metrics.get("cluster_acc", float("nan")), 4),
            "train_nesy": round(training_nesy(model, train_q), 4),
            **{f"neighbour_nesy k={k}": round(neighbour_nesy(model, train_q, pools.train_x, k), 4) for k in ks},
            **{f"neighbour_errors k={k}": round(neighbour_errors(model, train_q, pools.train_x, k), 4) for k in ks},
            **{f"expected errors k={k}": round(neighbour_errors(model, train_q, pools.train_x, k, hard=False), 4)
               for k in ks}}


def agreement_table(rows: list[dict], read: dict[str, object]) -> list[dict]:
    """Cohen's kappa between every two runs' readings (``read``, by the run folder as given; rows in
    ``rows``' order)."""
    from gedi_nesy.restarts import agreement

    names = [r["path"] for r in rows]
    return [{"run": a, "digit_acc": row["digit_acc"], **{b: round(agreement(read[a], read[b]), 2) for b in names}}
            for a, row in zip(names, rows)]


def main(argv: list[str] | None = None) -> int:
    from gedi_core.errors import GediError
    from gedi_nesy.restarts import network_readings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="finished run folders (metrics.json and checkpoint.pt)")
    ap.add_argument("--k", default="5", help="neighbours, comma-separated (default 5)")
    ap.add_argument("--agreement", action="store_true",
                    help="also Cohen's kappa between every two runs' readings of the first run's evaluation images "
                         "(gedi_nesy.restarts.agreement; no label read)")
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
    rows, read, images = [], {}, None
    for run in runs:
        try:
            pools, model, train_q = rebuilt(run)
        except GediError as exc:  # e.g. the run's data root, relative to where it was run
            print(f"judge_runs: {run}: {exc}", file=sys.stderr)
            return 2
        rows.append({**judge(run, pools, model, train_q, ks), "path": str(run)})
        if args.agreement:
            images = pools.eval_x if images is None else images  # the first run's: the same images for all
            read[str(run)] = network_readings(model, images)
    rows.sort(key=lambda row: row["digit_acc"])
    print("\n".join(markdown_table(rows, [k for k in rows[0] if k != "path"])))
    if args.agreement:
        print(f"\nCohen's kappa between the runs' readings of the {len(images)} evaluation images of {runs[0].name}:\n")
        print("\n".join(markdown_table(agreement_table(rows, read))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
