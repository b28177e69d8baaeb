#!/usr/bin/env bash
# The test suite: creates or reuses .venv, installs the package, runs pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$(bash "$root/scripts/venv.sh")"
cd "$root"
exec "$python" -m pytest tests "$@"
