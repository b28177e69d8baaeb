"""Paper Table 4: clustering on SVHN, CIFAR-10 and CIFAR-100 (test NMI, and with --fid generation FID).

    python -m experiments.vision.table4 --runs runs/vision --seeds 5                 # trains what is missing
    python -m experiments.vision.table4 --nproc 4 --device cuda --set amp=true      # each run on 4 GPUs
    python -m experiments.vision.table4 --datasets fashion-mnist --set epochs=3 --set data.train_subset=2000
    python -m experiments.vision.table4 --fid --fid-features inception              # adds FID (500 SGLD steps)

Writes RUNS/tables/table4.md and table4.csv (NMI and ACC over seeds, seconds per epoch).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from experiments.vision.common import (DATASETS, LABELS, cell, collect, ensure_eval, mean_std, parser,
                           seeds_text, write_table)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__, DATASETS)
    p.add_argument("--fid", action="store_true", help="also compute FID of SGLD samples (methods with L_GEN)")
    p.add_argument("--fid-samples", type=int, default=10000)
    p.add_argument("--fid-steps", type=int, default=500)
    p.add_argument("--fid-features", default=None, help="inception (default), module.path:factory or TorchScript")
    args = p.parse_args(argv)
    t0 = time.time()

    def value(folder: Path, metrics: dict) -> dict:
        out = {"nmi": metrics["nmi"], "acc": metrics["acc"], "seconds_per_epoch": metrics.get("seconds_per_epoch", 0)}
        if args.fid and metrics["method"] in ("gedi", "jem"):
            extra = ["--fid-samples", str(args.fid_samples), "--fid-steps", str(args.fid_steps)]
            if args.fid_features:
                extra += ["--fid-features", args.fid_features]
            out["fid"] = ensure_eval(args, folder, "fid,samples", ["fid"], extra)["fid"]
        return out

    vals = collect(args, value)
    header = ["method"] + [f"{d} NMI" for d in args.datasets] + ([f"{d} FID" for d in args.datasets] if args.fid else [])
    rows, csv_rows = [], []
    for method in args.methods:
        row = [LABELS[method]] + [cell(vals.get((d, method), {}).get("nmi", [])) for d in args.datasets]
        if args.fid:
            row += [cell(vals.get((d, method), {}).get("fid", []), 1) for d in args.datasets]
        rows.append(row)
        for d in args.datasets:
            v = vals.get((d, method), {})
            r = {"method": method, "dataset": d, "runs": len(v.get("nmi", []))}
            for k in ("nmi", "acc", "fid", "seconds_per_epoch"):
                if v.get(k):
                    m, s = mean_std(v[k])
                    r[f"{k}_mean"], r[f"{k}_std"] = round(m, 4), round(s, 4)
            r["nmi_runs"] = " ".join(f"{x:.3f}" for x in v.get("nmi", []))
            csv_rows.append(r)
    footer = (f"Test NMI of the cluster assignments (head argmax; k-means on the features for Barlow Twins), "
              f"median (mean ± sample std) over {seeds_text(args)}"
              + (f"; FID of {args.fid_samples} SGLD samples ({args.fid_steps} steps) against test images" if args.fid
                 else "") + f". Wall time {(time.time() - t0) / 60:.1f} min.")
    write_table(args, "table4", "Table 4: clustering (NMI)" + (" and generation (FID)" if args.fid else ""),
                header, rows, csv_rows, footer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
