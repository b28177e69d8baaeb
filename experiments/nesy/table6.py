"""Paper Table 6: MNIST addition (three images, ``C is A + B``) with GEDI as the neural predicate.

Runs the three arms (nesy, gedi, gedi+nesy) for each number of training examples over
several seeds and writes the table (median (mean ± sample std) of digit accuracy and NMI,
query accuracy, wall time, training throughput) as Markdown and CSV, plus one CSV row per run
(every seed's figure).

The protocol (docs/protocol.md): hyperparameters are chosen with ``--select``,
on a validation split carved from each run's training pool; the final runs (the default mode)
then read the test pool once, with seeds that were not used for choosing:

    # choose: runs with --validation 0.1 into runs/table6/select/, table on the validation pool
    python -m experiments.nesy.table6 --select --data mnist --data-root ../shared/data/MNIST/raw \\
        --sizes 100 --seeds 0,1,2 --out runs/table6
    # final: other seeds, test pool; the header records which seeds chose the recipe
    python -m experiments.nesy.table6 --data mnist --data-root ../shared/data/MNIST/raw \\
        --sizes 100,1000 --seeds 10,11,12,13,14 --selection-seeds 0,1,2 --out runs/table6

Every run is a gedi-nesy run folder under ``--out`` (``--out``/select in ``--select`` mode);
a run whose metrics.json exists is reused, an interrupted one resumes from its checkpoint.
Sizes the data cannot supply (the pool runs out of a digit) are reported as skipped.
The table's header names the protocol: the mode and the pool evaluated, the seeds used for
choosing and for the final runs, the command, the data (paths relative to the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import as_completed
from pathlib import Path

import torch

from gedi_core.config import parse_set, dotted_to_nested, read_config_file
from gedi_core.errors import GediError
from gedi_core.runfolder import write_csv, write_text
from gedi_nesy.run_setup import prepare
from gedi_nesy.config import build_nesy_config
from gedi_nesy.train import train_nesy

from experiments.common.reporting import REPO, markdown_table, seed_summary, shown_command, shown_path
from experiments.common.workers import worker_pool

PAPER = {  # paper Table 6 (GEDI & NeSy; NeSy only; GEDI only), test digit accuracy / NMI
    (100, "gedi+nesy"): "0.42 / 0.35",
    (1000, "gedi+nesy"): "0.96 / 0.91",
    (100, "nesy"): "0.10 / 0.00",
    (1000, "nesy"): "0.10 / 0.00",
    (100, "gedi"): "~0.10 / 0.22-0.44",
    (1000, "gedi"): "~0.10 / 0.22-0.44",
}


def shown_note(note: str, data_root: str | None) -> str:
    """A run's data note with the data root (as the run saw it) shown relative to the repository."""
    if data_root and os.path.isabs(data_root):
        for form in (str(Path(data_root)), data_root):
            note = note.replace(form, shown_path(form))
    return note


def run_name(data: str, n: int, arm: str, seed: int) -> str:
    return f"{data}_n{n}_{arm.replace('+', '_')}_s{seed}"


def job_config(n: int, arm: str, seed: int, settings: dict):
    """The config of one run: the config file < the table's flags < ``--set``; the validation
    split is the mode's (``--select``), never another layer's."""
    flags = {"arm": arm, "seed": seed, "epochs": settings["epochs"],
             "data": {"name": settings["data"], "data_root": settings["data_root"], "examples": n,
                      "validation": settings["validation"]}}
    cfg = build_nesy_config([(settings["config"], settings["base"]), ("flags", flags),
                             ("--set", dotted_to_nested(parse_set(settings["sets"])))])
    if cfg.data.validation != settings["validation"]:
        raise GediError(f"data.validation={cfg.data.validation:g} from --set: the validation split is set by the mode "
                        "(--select [--validation F]; the final mode has none)")
    return cfg


def run_one(n: int, arm: str, seed: int, settings: dict) -> dict:
    """Train (or reuse / resume) one run folder and return its table row."""
    torch.set_num_threads(settings["threads"])
    run_dir = Path(settings["out"]) / run_name(settings["data"], n, arm, seed)
    try:
        cfg = job_config(n, arm, seed, settings)
        if (run_dir / "metrics.json").is_file():
            metrics = json.loads((run_dir / "metrics.json").read_text())
            found = metrics.get("evaluated_on", "test")  # runs written before the protocol were all on test
            if found != settings["evaluated_on"]:
                raise GediError(f"{run_dir} was evaluated on the {found} pool, this table is on the "
                                f"{settings['evaluated_on']} pool; use another --out")
        else:
            t0 = time.time()
            pools, model, train_q, test_q = prepare(cfg, quiet=True)
            metrics = train_nesy(cfg, model, train_q, pools, test_q, out=run_dir,
                                 resume=(run_dir / "checkpoint.pt").is_file() or (run_dir / "start0").is_dir(),
                                 progress=settings["progress"])
            metrics["wall_seconds"] = round(time.time() - t0, 2)
    except GediError as exc:
        print(f"skip n={n} {arm} seed {seed}: {exc}", file=sys.stderr)
        return {"examples": n, "arm": arm, "seed": seed, "skipped": str(exc)}
    return {"examples": n, "arm": arm, "seed": seed, "epochs": metrics["epochs"],
            "evaluated_on": metrics.get("evaluated_on", "test"),
            **{k: metrics.get(k) for k in ("digit_acc", "nmi", "cluster_acc", "query_acc", "max_cluster_share",
                                           "seconds", "train_seconds", "queries_per_s", "train_nesy", "neighbour_nesy",
                                           "agreement", "chosen_start")},
            "starts": len(metrics.get("starts", [])) or 1, "renamings": len(metrics.get("renamings", [])),
            "data_note": shown_note(metrics.get("data_note", ""), settings["data_root"])}


def build_table(runs: list[dict]) -> list[dict]:
    """One row per (examples, arm): median (mean ± sample std) over the seeds that finished."""
    table: list[dict] = []
    for n in dict.fromkeys(r["examples"] for r in runs):
        for arm in dict.fromkeys(r["arm"] for r in runs):
            done = [r for r in runs if r["examples"] == n and r["arm"] == arm and "skipped" not in r]
            if not done:
                table.append({"examples": n, "arm": arm, "digit_acc": "skipped (why: runs.csv)", "nmi": "-",
                              "query_acc": "-", "seconds": "-", "queries_per_s": "-", "seeds": 0,
                              "paper (acc / NMI)": PAPER.get((n, arm), "-")})
                continue
            table.append({
                "examples": n, "arm": arm,
                "digit_acc": seed_summary([r["digit_acc"] for r in done]),
                "nmi": seed_summary([r["nmi"] for r in done]),
                "query_acc": seed_summary([r["query_acc"] for r in done if r["query_acc"] is not None]),
                "seconds": f"{statistics.median(r['seconds'] for r in done):.0f}",
                "queries_per_s": f"{statistics.median(r['queries_per_s'] for r in done):.1f}",
                "epochs": done[0]["epochs"], "seeds": len(done),
                "paper (acc / NMI)": PAPER.get((n, arm), "-"),
            })
    return table


def seed_list(seeds) -> str:
    return ", ".join(str(s) for s in seeds) if seeds else "none"


def protocol_header(*, select: bool, data: str, data_root: str | None, validation: float, seeds: list[int],
                    selection_seeds: list[int] | None, runs: list[dict], command: str) -> list[str]:
    """The lines above the table: what was run, on which pool, with which seeds, from which data."""
    done = sorted({r["seed"] for r in runs if "skipped" not in r})
    where = shown_path(data_root) if data_root else ("scikit-learn's, embedded" if data == "digits" else "downloaded")
    lines = [f"Command: `{command}`", ""]
    if select:
        lines += [f"Protocol: **selection runs** (`--select`): each run's training pool is split into a validation "
                  f"pool ({validation:g} of its images, seeded by the run's seed) and the rest, from which the "
                  "training examples are drawn; digit accuracy, NMI and query accuracy are measured on the "
                  "**validation pool**. The test pool is not read by these runs. Seeds used for choosing: "
                  f"{seed_list(seeds)}.", ""]
    else:
        chose = ("not stated (pass --selection-seeds)" if selection_seeds is None
                 else seed_list(selection_seeds) + " (selection runs on the validation pool, `--select`)")
        lines += [f"Protocol: **final runs** on the **test pool**, read once, by these runs. Seeds used for choosing "
                  f"the recipe: {chose}; seeds of these final runs: {seed_list(seeds)}.", ""]
        overlap = sorted(set(seeds) & set(selection_seeds or []))
        if overlap:
            lines += [f"Warning: seed(s) {seed_list(overlap)} were also used for choosing the recipe; their figures "
                      "are not independent of that choice (optimistic).", ""]
    lines += [f"Data: {data} ({where}); each run's pools:", ""]
    notes: dict[str, list[int]] = {}
    for r in runs:
        if r.get("data_note"):
            seeds_of_note = notes.setdefault(r["data_note"], [])
            if r["seed"] not in seeds_of_note:
                seeds_of_note.append(r["seed"])
    lines += [f"- seed {seed_list(sorted(s))}: {note}" for note, s in notes.items()] + [""]
    pool = "validation" if select else "test"
    lines += [f"Seeds that finished: {seed_list(done)}. Each cell: median (mean ± sample std) over the seeds of "
              f"{pool} digit accuracy (no matching), NMI and query accuracy (the paper reports the median); every "
              "seed's figure is in runs.csv. Wall seconds per run (median); training throughput in queries/s.", ""]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="mnist", help="mnist | digits")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--sizes", default="100,1000,10000", help="training examples, comma-separated")
    ap.add_argument("--seeds", default=None,
                    help="seeds of the runs (default 0,1,2; with --select: the seeds used for choosing, "
                         "default --selection-seeds)")
    ap.add_argument("--select", action="store_true",
                    help="selection runs: --validation of each training pool is the validation pool, the table is "
                         "on it and the test pool is never read; runs and table go to OUT/select")
    ap.add_argument("--validation", type=float, default=0.1,
                    help="with --select: share of each run's training pool held out for validation (default 0.1)")
    ap.add_argument("--selection-seeds", default=None,
                    help="final mode: the seeds the recipe was chosen with (recorded in the table's header)")
    ap.add_argument("--arms", default="nesy,gedi,gedi+nesy")
    ap.add_argument("--epochs", type=int, default=0, help="0: paper defaults (500/100/25)")
    ap.add_argument("--config", default=str(REPO / "experiments/configs/nesy/table6.yaml"),
                    help="config file (default: experiments/configs/nesy/table6.yaml)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config key")
    ap.add_argument("--out", default="runs/table6")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--report-only", action="store_true",
                    help="write the table from the finished runs under --out; train nothing")
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at once (processes; one per core)")
    ap.add_argument("--progress", action="store_true", help="progress bars (with --jobs 1)")
    command = shown_command("experiments.nesy.table6", list(sys.argv[1:] if argv is None else argv))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    def seeds_of(text: str, flag: str) -> list[int]:
        try:
            return [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            ap.error(f"{flag}: comma-separated integers, got {text!r}")

    selection_seeds = None if args.selection_seeds is None else seeds_of(args.selection_seeds, "--selection-seeds")
    if args.seeds is not None:
        seeds = seeds_of(args.seeds, "--seeds")
    else:
        seeds = selection_seeds if args.select and selection_seeds is not None else [0, 1, 2]
    if args.select:
        if not 0 < args.validation < 1:
            ap.error(f"--validation must lie in (0, 1), got {args.validation:g}")
        if selection_seeds is not None and selection_seeds != seeds:
            ap.error("--select runs the seeds used for choosing: --seeds and --selection-seeds differ")
        selection_seeds = seeds
    base = read_config_file(args.config) if args.config else {}
    out = Path(args.out) / "select" if args.select else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(n, arm, seed) for n in [int(s) for s in args.sizes.split(",")]
            for arm in args.arms.split(",") for seed in seeds]
    order = {job: i for i, job in enumerate(jobs)}
    settings = dict(config=str(args.config), base=base, sets=args.set, data=args.data, data_root=args.data_root,
                    epochs=args.epochs, out=str(out), threads=args.threads,
                    progress=args.progress and args.jobs == 1,
                    validation=args.validation if args.select else 0.0,
                    evaluated_on="validation" if args.select else "test")
    if jobs:
        try:  # the config's errors (a bad --set, a validation split in the final mode) before any run
            job_config(*jobs[0], settings)
        except GediError as exc:
            ap.error(str(exc))
    runs: list[dict] = []

    def record(row: dict) -> None:
        runs.append(row)
        runs.sort(key=lambda r: order[(r["examples"], r["arm"], r["seed"])])
        print(json.dumps(row), flush=True)
        write_csv(out / "runs.csv", runs)

    if args.report_only:
        for job in jobs:
            run_dir = out / run_name(args.data, *job)
            if (run_dir / "metrics.json").is_file():
                record(run_one(*job, settings))
            else:
                print(f"not run: {run_dir}", file=sys.stderr)
    elif args.jobs == 1:
        for job in jobs:
            record(run_one(*job, settings))
    else:  # largest runs first, so that the pool ends together
        by_cost = sorted(jobs, key=lambda j: (j[1] == "nesy", -j[0]))
        with worker_pool(args.jobs) as pool:
            futures = [pool.submit(run_one, *job, settings) for job in by_cost]
            for fut in as_completed(futures):
                record(fut.result())

    table = build_table(runs)
    write_csv(out / "table6.csv", table)
    title = "selection runs, validation pool" if args.select else "final runs, test pool"
    lines = [f"# Table 6: MNIST addition ({args.data}; {title})", "",
             *protocol_header(select=args.select, data=args.data, data_root=args.data_root,
                              validation=args.validation, seeds=seeds, selection_seeds=selection_seeds,
                              runs=runs, command=command),
             *markdown_table(table)]
    write_text(out / "table6.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
