"""Multi-digit MNIST addition (two N-digit numbers of images and their sum) for N = 1 .. 100.

For each N, program and arm, one gedi-nesy run (``--task multi_addition --digits N``, the batched
engine) in its own process, and one table row: compile seconds and circuit size (KLay edges),
training queries/s, the process's peak memory, digit accuracy (test images), sum accuracy (test
queries of the same N: the sum of the numbers read off the network's most likely digits against
the label), minutes for the whole run.

Programs: ``long`` = programs/long_addition.pl (column-wise addition with carries, one circuit
per N for every sum); ``deepproblog`` = programs/multi_addition.pl (DeepProbLog's ``number/3``
form: ground, one circuit per distinct sum, for N <= 2; from N = 3 the batched engine evaluates
it on the digits' distributions (``gedi_nesy.arithmetic_plan``), whose size grows as 10^N: run
only up to ``--deepproblog-max-digits``, larger N are reported as skipped).

Training queries: by default one permutation of the training pool cut into pool / (2N) queries
(each image used once: 8000 / (2N) with MNIST t10k's 8000 training images); ``--examples K``
draws K queries, in further permutations when K is larger (images reused, never twice in one
query; ``gedi-nesy train --digits`` help).

    python -m experiments.nesy.multi_digit --data mnist --data-root ../shared/data/MNIST/raw \\
        --digits 1,2,4,15,100 --arms nesy,gedi+nesy --epochs 10 --out runs/multi_digit

Resumable: every run is a run folder under ``--out``; a finished one (``multi_digit.json``) is
reused, an interrupted one resumes from its checkpoint.  The table goes to ``--out``/table.md and
table.csv (one row per run), and is printed.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gedi_core.config import dotted_to_nested, parse_set
from gedi_core.errors import GediError
from gedi_core.runfolder import write_csv, write_text

from experiments.common.reporting import REPO, markdown_table, seed_summary, shown_command, shown_path
from experiments.common.workers import worker_pool

PROGRAMS = {"long": "programs/long_addition.pl", "deepproblog": "programs/multi_addition.pl"}
# batch 32 up to N = 4, 8 from N = 5 on: at N = 15 with batch 32 (90 optimizer steps in 10 epochs)
# the digits were not learned (docs/results.md, "Multi-digit addition")
DEFAULT_BATCH_SIZES = "32,5=8"
# N = 100: 2000 queries (50 permutations of the pool) for 2 epochs, 500 optimizer steps; with 400
# queries for 3 epochs (150 steps) the digits stayed at chance (docs/results.md)
DEFAULT_EXAMPLES = "0,100=2000"
DEFAULT_EPOCHS = "10,100=2"
# every seed learns: a start ending with a training L_NESY above 0.2 per digit of the query
# (0.2 * 2N) is drawn afresh, up to 4 restarts, and the run keeps the lowest start.  On the
# validation split the training L_NESY per digit tracked the digit accuracy: 0.04-0.10 at
# 0.965-0.98, 0.16 at 0.958, 0.17-0.24 at 0.94-0.925, 1.1-1.2 for starts that learnt nothing.
# No plateau cut: at N = 4 healthy starts are still at the loss of uniform predictions after 3
# epochs.  (The label-free criteria of gedi_nesy.restarts; docs/trials/nesy.md, "2026-12-01:
# every seed of multi-digit addition".)
DEFAULT_RESTARTS = 4
DEFAULT_RESTART_PER_DIGIT = 0.2
DEFAULT_RESTART_PLATEAU = 0
COLUMNS = ["N", "program", "arm", "seed", "examples", "batch", "epochs", "compile s", "circuit edges", "queries/s",
           "peak MB", "digit acc", "sum acc", "minutes", "starts", "train L_NESY"]
# Published sum accuracy / training time on the standard benchmark (60k MNIST training images), as
# reported (DeepProofLog, AAAI 2026; A-NeSI; Scallop; DeepSoftLog; PLIA).
ANCHORS = [
    ("DeepProbLog (exact)", "95.2 %", "timeout", "-", "-"),
    ("Scallop", "-", "92.3 % (74 min)", "timeout", "-"),
    ("A-NeSI", "-", "92.6 % (70 min)", "75.9 % (917 min)", "-"),
    ("DeepSoftLog", "-", "-", "77.1 % (1,325 min)", "-"),
    ("PLIA", "-", "-", "79.0 %", "-"),
    ("DeepProofLog (exact DP)", "-", "94.0 % (25 min)", "80.8 % (42 min)", "37.8 % (106 min)"),
    ("perfect reasoner, digits 0.9907", "-", "92.9 %", "75.8 %", "15.4 %"),
]


def run_name(n: int, program: str, arm: str, seed: int) -> str:
    return f"n{n}_{program}_{arm.replace('+', '_')}_s{seed}"


@dataclass(frozen=True)
class PerN:
    """A setting that may change with N: ``V`` for every N, or ``V,N1=V1,N2=V2`` (``Vk`` from
    ``Nk`` digits on)."""

    default: int
    from_n: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse(cls, text: str, least: int = 1) -> "PerN":
        """``text`` read as above, every value at least ``least``; ValueError naming the bad part."""
        default, from_n = None, {}
        for part in (p.strip() for p in str(text).split(",") if p.strip()):
            n, _, v = part.rpartition("=")
            if not v.isdigit() or int(v) < least or (n and not n.isdigit()):
                raise ValueError(part)
            if n:
                from_n[int(n)] = int(v)
            else:
                default = int(v)
        if default is None:
            raise ValueError(text)
        return cls(default, tuple(sorted(from_n.items())))

    def at(self, n: int) -> int:
        """The value at N: the entry of the largest N' <= N, else the default."""
        below = [v for k, v in self.from_n if k <= n]
        return below[-1] if below else self.default


def cell_config(n: int, program: str, arm: str, seed: int, settings: dict):
    from gedi_nesy.config import build_nesy_config

    flags = {"program": str(REPO / PROGRAMS[program]), "arm": arm, "seed": seed, "epochs": settings["epochs"].at(n),
             "batch_size": settings["batch_size"].at(n),
             "data": {"name": settings["data"], "data_root": settings["data_root"], "task": "multi_addition",
                      "digits": n, "examples": settings["examples"].at(n) or 1, "test_examples": settings["test_examples"]}}
    if settings["restarts"]:  # (else the config's defaults: one start)
        flags.update(restarts=settings["restarts"], restart_plateau=settings["restart_plateau"],
                     restart_above=round(settings["restart_per_digit"] * 2 * n, 6))
    return build_nesy_config([("flags", flags), ("--set", dotted_to_nested(parse_set(settings["sets"])))])


class ConfigMismatch(GediError):
    """A cell's folder holds a run of another config: the command stops (exit 2)."""


def check_same_config(run_dir: Path, saved: dict | None, cfg, settings: dict) -> None:
    """A cell's folder is reused or resumed only with the config this command gives it: else one
    line naming the first keys that differ (``saved``: the folder's config, None if it has none).
    With ``--examples 0`` the query count follows the pool and is not compared before the pool is read;
    the program is compared by its text (the copy the run folder keeps), not its path."""
    from gedi_core.config import to_dict
    from gedi_core.runfolder.resume import RESUMABLE_KEYS, config_differences

    if saved is None:
        return
    pool_sized = not settings["examples"].at(cfg.data.digits) and cfg.data.examples == 1
    # the program by its text, not its path (the same table run from another checkout)
    ignore = RESUMABLE_KEYS + ("download", "program") + (("examples",) if pool_sized else ())
    diff = config_differences(saved, to_dict(cfg), ignore=ignore)
    kept = run_file(run_dir, "program.pl")
    if kept is not None and kept.read_text() != Path(cfg.program).read_text():
        diff.insert(0, f"program: the text of {shown_path(cfg.program)} differs from the run's {kept.name}")
    if diff:
        raise ConfigMismatch(f"{run_dir}: holds a run of another config ({'; '.join(diff[:3])}); "
                        "choose another --out (a finished cell is never overwritten)")


def run_file(run_dir: Path, name: str) -> Path | None:
    """A cell's file ``name`` (config.yaml, program.pl): the run folder's, or with restarts the
    first start's until the run ends; None if neither is there."""
    return next((f for f in (run_dir / name, run_dir / "start0" / name) if f.is_file()), None)


def saved_config(run_dir: Path) -> dict | None:
    """The config a cell's run folder was written with, or None."""
    import yaml

    path = run_file(run_dir, "config.yaml")
    return yaml.safe_load(path.read_text()) if path else None


def interrupted(run_dir: Path) -> bool:
    """Whether a cell's run was interrupted: a checkpoint in its folder or, with restarts, in one
    of its starts' (``start<k>``, resumed by ``train_nesy``)."""
    return (run_dir / "checkpoint.pt").is_file() or any(run_dir.glob("start*/checkpoint.pt"))


def run_cell(n: int, program: str, arm: str, seed: int, settings: dict) -> dict:
    """Train (or reuse / resume) one run in this process; return its table row."""
    import torch

    from gedi_core.checkpoint import model_state, read_checkpoint
    from gedi_nesy.run_setup import prepare
    from gedi_nesy.data import load_pools
    from gedi_nesy.long_addition import sum_accuracy
    from gedi_nesy.train import train_nesy

    torch.set_num_threads(settings["threads"])
    run_dir = Path(settings["out"]) / run_name(n, program, arm, seed)
    done = run_dir / "multi_digit.json"
    t0 = time.time()
    cfg = cell_config(n, program, arm, seed, settings)
    if not settings["examples"].at(n):  # one permutation of the training pool: each image once
        cfg.data.examples = max(1, int(load_pools(cfg.data, cfg.seed).train_x.shape[0]) // (2 * n))
    check_same_config(run_dir, saved_config(run_dir), cfg, settings)
    if done.is_file():
        return json.loads(done.read_text())
    pools, model, train_q, test_q = prepare(cfg, quiet=True)
    if (run_dir / "metrics.json").is_file():  # trained, interrupted before its row: read the weights back
        state = read_checkpoint(run_dir / "checkpoint.pt")
        for name, net in model.networks.items():
            net.network_module.load_state_dict(model_state(state)["networks"][name])
        metrics, peak = json.loads((run_dir / "metrics.json").read_text()), None
    else:
        metrics = train_nesy(cfg, model, train_q, pools, test_q, out=run_dir,
                             resume=interrupted(run_dir), progress=False)
        peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    row = {"N": n, "program": program, "arm": arm, "seed": seed, "examples": len(train_q), "batch": cfg.batch_size,
           "epochs": metrics["epochs"], "compile s": round(metrics.get("compile_seconds", float("nan")), 2),
           "circuit edges": model.solver.stats.get("circuit_nodes") if hasattr(model.solver, "stats") else None,
           "queries/s": metrics.get("queries_per_s"), "peak MB": peak,
           "digit acc": round(metrics["digit_acc"], 4), "sum acc": round(sum_accuracy(model, test_q), 4),
           "minutes": round((time.time() - t0) / 60, 2), "test queries": len(test_q),
           "starts": len(metrics.get("starts", [])) or 1, "train L_NESY": metrics.get("train_nesy")}
    write_text(done, json.dumps(row, indent=1))
    return row


def run_in_child(job: tuple, settings: dict) -> dict:
    """One run in a fresh process (its own peak memory, no circuits left from other N)."""
    with worker_pool(1) as pool:
        return pool.submit(run_cell, *job, settings).result()


def skipped_row(n: int, program: str, arm: str, seed: int, why: str) -> dict:
    return {"N": n, "program": program, "arm": arm, "seed": seed, "skipped": why}


def summary(rows: list[dict]) -> list[dict]:
    """One row per (N, program, arm) over its seeds: median (mean ± sample std) of digit and sum
    accuracy with every seed's value, and the median of the cost columns."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if "skipped" not in r:
            groups.setdefault((r["N"], r["program"], r["arm"]), []).append(r)
    out = []
    for (n, program, arm), runs in groups.items():
        def median(key):
            values = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
            return round(statistics.median(values), 2) if values else ""
        out.append({"N": n, "program": program, "arm": arm, "seeds": ", ".join(str(r["seed"]) for r in runs),
                    "digit acc": seed_summary([r["digit acc"] for r in runs]),
                    "every seed": " / ".join(f"{r['digit acc']:.3f}" for r in runs),
                    "sum acc": seed_summary([r["sum acc"] for r in runs]),
                    "sum acc, every seed": " / ".join(f"{r['sum acc']:.3f}" for r in runs),
                    "digit acc^(2N)": round(statistics.median(r["digit acc"] for r in runs) ** (2 * n), 3),
                    **{k: median(k) for k in ("compile s", "queries/s", "peak MB", "minutes")},
                    "starts": sum(r.get("starts", 1) for r in runs)})
    return out


def report(rows: list[dict], out: Path, command: str) -> str:
    lines = ["# Multi-digit addition", "", f"Command: `{command}`", "",
             "Over seeds (accuracy: median (mean ± sample std), then every seed; costs: median per run; "
             "starts: the runs' starts, restarts included):", "", *markdown_table(summary(rows)), "",
             "Every run:", "",
             *markdown_table([{k: r.get(k, "") for k in COLUMNS + ["skipped"]} for r in rows]), "",
             "Published sum accuracy (minutes), 60k MNIST training images:", "",
             *markdown_table([dict(zip(["method", "N=2", "N=4", "N=15", "N=100"], a)) for a in ANCHORS]), ""]
    text = "\n".join(lines)
    write_text(out / "table.md", text)
    write_csv(out / "table.csv", rows)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="mnist", help="mnist | digits")
    ap.add_argument("--data-root", default=None, help="MNIST raw files (t10k only: 8000 training images)")
    ap.add_argument("--digits", default="1,2,3,4,15,100", help="N, comma-separated")
    ap.add_argument("--programs", default="long,deepproblog", help="long | deepproblog, comma-separated")
    ap.add_argument("--deepproblog-max-digits", type=int, default=4,
                    help="largest N run with DeepProbLog's number/3 program (its numbers' distributions have 10^N "
                         "values; at most 7)")
    ap.add_argument("--arms", default="nesy,gedi+nesy")
    ap.add_argument("--seeds", default="0")
    per_n = "V for every N, or V,N1=V1,... (Vk from Nk digits on)"
    ap.add_argument("--epochs", default=DEFAULT_EPOCHS, help=f"epochs: {per_n}; default {DEFAULT_EPOCHS}")
    ap.add_argument("--batch-size", default=DEFAULT_BATCH_SIZES,
                    help=f"queries per batch: {per_n}; default {DEFAULT_BATCH_SIZES} (long numbers need more "
                         "optimizer steps, not more queries a step)")
    ap.add_argument("--examples", default=DEFAULT_EXAMPLES,
                    help=f"training queries per run: {per_n}; 0: pool / 2N, one permutation of the training pool; "
                         f"default {DEFAULT_EXAMPLES} (at N = 100 a permutation is 40 queries)")
    ap.add_argument("--restarts", type=int, default=DEFAULT_RESTARTS,
                    help="starts drawn afresh per run while a start ends badly (0: the plain arms; the run keeps "
                         f"the start with the lowest training L_NESY); default {DEFAULT_RESTARTS}")
    ap.add_argument("--restart-per-digit", type=float, default=DEFAULT_RESTART_PER_DIGIT,
                    help="a start ending with a training L_NESY above this times 2N is restarted (default "
                         f"{DEFAULT_RESTART_PER_DIGIT})")
    ap.add_argument("--restart-plateau", type=int, default=DEFAULT_RESTART_PLATEAU,
                    help="epochs after which a start still at the loss of uniform predictions is cut and drawn "
                         f"afresh (0: off; default {DEFAULT_RESTART_PLATEAU})")
    ap.add_argument("--test-examples", type=int, default=200, help="test queries per run (sum accuracy)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config key")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--out", default="runs/multi_digit")
    ap.add_argument("--report", action="store_true",
                    help="run nothing: the table of the cells already finished under --out (the others: 'not run')")
    command = shown_command("experiments.nesy.multi_digit", list(sys.argv[1:] if argv is None else argv))
    args = ap.parse_args(argv)
    try:
        digits = [int(x) for x in args.digits.split(",") if x.strip()]
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    except ValueError:
        ap.error("--digits and --seeds take comma-separated integers")
    per_n_values = {}
    for flag, text, least in (("--epochs", args.epochs, 1), ("--batch-size", args.batch_size, 1),
                              ("--examples", args.examples, 0)):
        try:
            per_n_values[flag] = PerN.parse(text, least)
        except ValueError as exc:
            ap.error(f"{flag}: expected V or V,N=V,... with integers >= {least}, got '{exc}'")
    programs = [p for p in args.programs.split(",") if p.strip()]
    unknown = [p for p in programs if p not in PROGRAMS]
    if unknown:
        ap.error(f"--programs: unknown {', '.join(unknown)} (known: {', '.join(PROGRAMS)})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = dict(data=args.data, data_root=args.data_root, epochs=per_n_values["--epochs"],
                    batch_size=per_n_values["--batch-size"],
                    examples=per_n_values["--examples"], test_examples=args.test_examples, sets=args.set, threads=args.threads,
                    restarts=args.restarts, restart_per_digit=args.restart_per_digit,
                    restart_plateau=args.restart_plateau,
                    out=str(out))
    jobs = [(n, p, arm, s) for n in digits for p in programs for arm in args.arms.split(",") for s in seeds]
    try:  # a bad flag or --set before any run
        cell_config(*jobs[0], settings) if jobs else None
    except GediError as exc:
        ap.error(str(exc))
    rows: list[dict] = []
    for job in jobs:
        n, program = job[0], job[1]
        if program == "deepproblog" and n > args.deepproblog_max_digits:
            row = skipped_row(*job, f"N > --deepproblog-max-digits {args.deepproblog_max_digits}")
        else:
            run_dir = out / run_name(*job)
            done = run_dir / "multi_digit.json"
            try:
                check_same_config(run_dir, saved_config(run_dir), cell_config(*job, settings), settings)
                if done.is_file():
                    row = json.loads(done.read_text())
                elif args.report:
                    row = skipped_row(*job, "not run")
                else:
                    row = run_in_child(job, settings)
            except ConfigMismatch as exc:
                print(f"multi_digit: error: {exc}", file=sys.stderr)
                return 2
            except GediError as exc:
                row = skipped_row(*job, str(exc))
        rows.append(row)
        print(json.dumps(row), flush=True)
        report(rows, out, command)
    print(report(rows, out, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
