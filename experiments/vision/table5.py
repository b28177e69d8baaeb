"""Paper Table 5: out-of-distribution detection with CIFAR-10 as the training (in-distribution) set.

    python -m experiments.vision.table5 --runs runs/vision --seeds 5      # trains CIFAR-10 runs if missing
    python -m experiments.vision.table5 --datasets fashion-mnist --ood mnist --set epochs=3   # CPU-scale check

Score s(x) = -||d log p(x)/dx|| of each trained model, AUROC of CIFAR-10 test images (positives) against the
test split of each OOD set (svhn cifar100). Writes RUNS/tables/table5.md and table5.csv.
"""

from __future__ import annotations

import sys

from experiments.vision.common import ood_table

if __name__ == "__main__":
    sys.exit(ood_table(__doc__, "table5", "cifar10", ["svhn", "cifar100"], "Table 5: OOD detection, in-distribution CIFAR-10 (AUROC)"))
