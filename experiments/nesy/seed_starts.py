"""Every seed of a Table 6 final run with restarts, start by start: what each seed cost and how
it ended.

For each run folder ``OUT/<data>_n<examples>_<arm>_s<seed>`` (``python -m
experiments.nesy.table6 --out OUT``) with a ``metrics.json``: the kept start's test figures, the
start kept, how many starts there were and how many were cut on the plateau, how the run ended
(**a pair that agreed**: the last start was accepted by the rule that ended the run,
:func:`gedi_nesy.train.accepted`, under the run's own ``config.yaml``; or **budget spent**: the
fallback kept one), the starts the renaming through the neighbours changed
(their test digit accuracy after it, from the ``renamed_neighbours`` column of each start's
``epochs.csv``) and the seed's wall minutes. Reads the run folders only; trains nothing.

    python -m experiments.nesy.seed_starts runs/table6_tie --examples 100
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from experiments.common.reporting import markdown_table
from gedi_core.config.build import from_dict
from gedi_core.config.files import read_config_file
from gedi_nesy.config import NesyConfig
from gedi_nesy.train import accepted


def renamed_starts(folder: Path, starts: list[dict[str, Any]]) -> list[str]:
    """``start k (digit acc)`` for every start whose ``epochs.csv`` records a renaming through the neighbours."""
    out = []
    for s in starts:
        epochs = folder / f"start{s['start']}" / "epochs.csv"
        if epochs.is_file():
            with epochs.open() as f:
                if any(row.get("renamed_neighbours") for row in csv.DictReader(f)):
                    out.append(f"start {s['start']} ({s.get('digit_acc')})")
    return out


def ended_by(starts: list[dict[str, Any]], cfg: NesyConfig) -> str:
    """"a pair that agreed" where the run's last start was accepted (:func:`gedi_nesy.train.accepted`
    with the run's config), else "budget spent"."""
    found = [(s, {}) for s in starts]  # accepted reads each start's metrics, by start number
    return "a pair that agreed" if starts and accepted(found, starts[-1], cfg) else "budget spent"


def seed_row(folder: Path) -> dict[str, Any]:
    m = json.loads((folder / "metrics.json").read_text())
    cfg = from_dict(NesyConfig, read_config_file(folder / "config.yaml"), str(folder / "config.yaml"))
    starts = m.get("starts") or []
    cut = sum(1 for s in starts if s.get("cut_at") is not None)
    return {"seed": m["seed"], "digit acc": m["digit_acc"], "cluster acc": m["cluster_acc"], "NMI": f"{m['nmi']:.3f}",
            "query acc": m["query_acc"], "kept start": m.get("chosen_start", 0), "starts": f"{len(starts)} ({cut} cut)",
            "run ended by": ended_by(starts, cfg),
            "renamed through the neighbours": ", ".join(renamed_starts(folder, starts)) or "-",
            "minutes": f"{m['seconds'] / 60:.1f}"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="the --out folder of a table6 run")
    ap.add_argument("--examples", type=int, default=100, help="training examples of the runs to list")
    args = ap.parse_args(argv)
    folders = [d for d in args.out.glob(f"*_n{args.examples}_*_s*") if (d / "metrics.json").is_file()]
    if not folders:
        print(f"error: {args.out}: no finished run folder with {args.examples} examples", file=sys.stderr)
        return 2
    rows = sorted((seed_row(d) for d in folders), key=lambda r: r["seed"])
    print("\n".join(markdown_table(rows)))
    accs = [r["digit acc"] for r in rows]
    if len(accs) > 1:
        print(f"\nmedian {statistics.median(accs):.4f}, mean {statistics.fmean(accs):.4f} ± "
              f"{statistics.stdev(accs):.4f} (sample std), worst {min(accs)}; {len(accs)} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
