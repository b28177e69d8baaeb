"""Paper Table 11: out-of-distribution detection with SVHN as the training (in-distribution) set.

    python experiments/vision_table11.py --runs runs/vision --seeds 5      # trains SVHN runs if missing
    python experiments/vision_table11.py --datasets fashion-mnist --ood mnist --set epochs=3   # CPU-scale check

Score s(x) = -||d log p(x)/dx|| of each trained model, AUROC of SVHN test images (positives) against the
test split of each OOD set (cifar10 cifar100). Writes RUNS/tables/table11.md and table11.csv.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vision_common import ood_table  # noqa: E402

if __name__ == "__main__":
    sys.exit(ood_table(__doc__, "table11", "svhn", ["cifar10", "cifar100"], "Table 11: OOD detection, in-distribution SVHN (AUROC)"))
