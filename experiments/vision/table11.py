"""Paper Table 11: out-of-distribution detection with SVHN as the training (in-distribution) set.

    python -m experiments.vision.table11 --runs runs/vision --seeds 5      # trains SVHN runs if missing
    python -m experiments.vision.table11 --datasets fashion-mnist --ood mnist --set epochs=3   # CPU-scale check

Score s(x) = -||d log p(x)/dx|| of each trained model, AUROC of SVHN test images (positives) against the
test split of each OOD set (cifar10 cifar100). Writes RUNS/tables/table11.md and table11.csv.
"""

from __future__ import annotations

import sys

from experiments.vision.common import ood_table

if __name__ == "__main__":
    sys.exit(ood_table(__doc__, "table11", "svhn", ["cifar10", "cifar100"], "Table 11: OOD detection, in-distribution SVHN (AUROC)"))
