#!/usr/bin/env bash
# The main job on embedded data, offline: creates or reuses .venv, installs the package, and runs the
# smallest setting of the MNIST-addition benchmark (paper Table 6: 100 examples, GEDI + NeSy arm) on
# scikit-learn's handwritten digits. Each run gets a fresh folder runs/demo-<date-time> (a finished run
# is never overwritten). Extra arguments are passed to `gedi-nesy train` (e.g. --out DIR --resume).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$(bash "$root/scripts/venv.sh")"
cd "$root"
exec "$python" -m gedi_nesy train --program programs/addition.pl --data digits --examples 100 \
    --arm gedi+nesy --seed 0 --out "runs/demo-$(date +%Y%m%d-%H%M%S)" "$@"
