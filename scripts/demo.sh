#!/usr/bin/env bash
# The main job on embedded data, offline: creates or reuses .venv, installs the package, runs it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$(bash "$root/scripts/venv.sh")"
cd "$root"
exec "$python" -m gedi_core train --config experiments/configs/toy/moons.yaml --method gedi --seed 0 --out runs/demo "$@"
