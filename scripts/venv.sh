#!/usr/bin/env bash
# Create (or reuse) ./.venv and install this package into it with its test extras.
# Sourced by scripts/demo.sh and scripts/test.sh; prints the venv's python path.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${GEDI_VENV:-$root/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --upgrade pip >&2
fi
stamp="$venv/.gedi-installed"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  "$venv/bin/pip" install -q -e "$root[test]" >&2
  touch "$stamp"
fi
echo "$venv/bin/python"
