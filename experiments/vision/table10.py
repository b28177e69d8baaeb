"""Paper Table 10: linear probe on frozen backbone features (test accuracy).

    python -m experiments.vision.table10 --runs runs/vision --seeds 5
    python -m experiments.vision.table10 --datasets fashion-mnist --set epochs=3 --set data.train_subset=2000

The backbone g(x) of each trained run is frozen; a multinomial logistic regression is fitted on the
standardised features of the training split (the run's training images) and scored on the test split.
Writes RUNS/tables/table10.md and table10.csv.
"""

from __future__ import annotations

import sys
import time

from experiments.vision.common import (DATASETS, LABELS, cell, collect, ensure_eval, mean_std, parser,
                           seeds_text, write_table)


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__, DATASETS).parse_args(argv)
    t0 = time.time()
    vals = collect(args, lambda folder, m: {"probe_test_acc": ensure_eval(args, folder, "probe",
                                                                          ["probe_test_acc"])["probe_test_acc"]})
    rows, csv_rows = [], []
    for method in args.methods:
        rows.append([LABELS[method]] + [cell(vals.get((d, method), {}).get("probe_test_acc", []))
                                        for d in args.datasets])
        for d in args.datasets:
            v = vals.get((d, method), {}).get("probe_test_acc", [])
            m, s = mean_std(v)
            csv_rows.append({"method": method, "dataset": d, "probe_acc_mean": round(m, 4),
                             "probe_acc_std": round(s, 4), "runs": len(v)})
    footer = (f"Linear-probe test accuracy on frozen backbone features, median (mean ± sample std) over "
              f"{seeds_text(args)}. "
              f"Wall time {(time.time() - t0) / 60:.1f} min.")
    write_table(args, "table10", "Table 10: linear probe", ["method", *args.datasets], rows, csv_rows, footer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
