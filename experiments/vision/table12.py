"""Paper Table 12: out-of-distribution detection with CIFAR-100 as the training (in-distribution) set.

    python -m experiments.vision.table12 --runs runs/vision --seeds 5      # trains CIFAR-100 runs if missing
    python -m experiments.vision.table12 --datasets fashion-mnist --ood mnist --set epochs=3   # CPU-scale check

Score s(x) = -||d log p(x)/dx|| of each trained model, AUROC of CIFAR-100 test images (positives) against the
test split of each OOD set (svhn cifar10). Writes RUNS/tables/table12.md and table12.csv.
"""

from __future__ import annotations

import sys

from experiments.vision.common import ood_table

if __name__ == "__main__":
    sys.exit(ood_table(__doc__, "table12", "cifar100", ["svhn", "cifar10"], "Table 12: OOD detection, in-distribution CIFAR-100 (AUROC)"))
