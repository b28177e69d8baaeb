"""Same seeds, two commits: do a toy run, a small image run and small NeSy runs give the same result?

Checks out ``--before`` and ``--after`` (default: the working tree) into temporary worktrees, runs
the same fixed-seed commands with each (one thread), and compares the final metrics and the trained
weights (old and new checkpoint layouts are both read). Used to show that a refactoring changed no
numbers::

    python -m experiments.tools.behaviour_check --before ba70337
    python -m experiments.tools.behaviour_check --before ba70337 --after HEAD --data-root ../shared/data/MNIST/raw

Prints one line per run (identical, or the largest weight difference and the metrics that differ).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from experiments.common.reporting import REPO
TIMING = {"seconds", "queries_per_s", "train_seconds", "images_per_s", "seconds_per_epoch", "compile_seconds",
          "compile_disk_hits", "compiled_shapes", "warnings", "data_note", "program"}


def runs(data_root: str | None) -> dict[str, list[str]]:
    """The fixed-seed commands (``python -m ...`` arguments, without --out)."""
    out = {
        "toy": ["gedi_core", "train", "--dataset", "moons", "--method", "gedi", "--iters", "300", "--log-every", "50",
                "--ckpt-every", "100", "--seed", "1"],
        "toy_barlow": ["gedi_core", "train", "--dataset", "circles", "--method", "barlow", "--iters", "100",
                       "--log-every", "50", "--seed", "2"],
        "nesy": ["gedi_nesy", "train", "--program", "programs/addition.pl", "--examples", "30", "--epochs", "3",
                 "--seed", "0", "--sgld-steps", "3"],
        "nesy_gedi_arm": ["gedi_nesy", "train", "--program", "programs/addition.pl", "--examples", "30", "--epochs",
                          "2", "--seed", "1", "--arm", "gedi", "--w-inv", "10", "--sgld-steps", "3"],
        "nesy_exact": ["gedi_nesy", "train", "--program", "programs/sum.pl", "--examples", "20", "--epochs", "2",
                       "--seed", "2", "--engine", "exact", "--sgld-steps", "2"],
    }
    if data_root is not None and Path(data_root).is_dir():
        out["image"] = ["gedi_core", "train", "--dataset", "mnist-t10k", "--data-root", str(Path(data_root).resolve()),
                        "--method", "gedi", "--epochs", "2", "--train-subset", "192", "--test-subset", "256",
                        "--width", "8", "--batch-size", "32", "--sgld-steps", "2", "--log-every", "2"]
    return out


def weights(run: Path) -> dict[str, torch.Tensor]:
    """Trained weights of a run folder, for any checkpoint layout this project has written."""
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    model = state["step"]["model"] if "step" in state else state.get("model", state.get("networks"))
    if "networks" in model:
        model = model["networks"]
    if all(isinstance(v, dict) for v in model.values()):
        return {f"{n}.{k}": v for n, sd in model.items() for k, v in sd.items()}
    return dict(model)


def run_all(tree: Path, out: Path, commands: dict[str, list[str]]) -> dict[str, dict]:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    found = {}
    for name, args in commands.items():
        folder = out / name
        proc = subprocess.run([sys.executable, "-m", *args, "--no-progress", "--out", str(folder)], cwd=tree, env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{tree.name}: {name} failed:\n{proc.stderr[-2000:]}")
        found[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="git revision to compare against")
    ap.add_argument("--after", default=None, help="git revision (default: the working tree)")
    ap.add_argument("--data-root", default=str(REPO.parent / "shared" / "data" / "MNIST" / "raw"),
                    help="MNIST raw files for the image run (skipped when missing)")
    args = ap.parse_args(argv)
    commands = runs(args.data_root)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trees = {}
        for label, rev in (("before", args.before), ("after", args.after)):
            if rev is None:
                trees[label] = REPO
                continue
            trees[label] = tmp / label
            subprocess.run(["git", "worktree", "add", "--detach", str(trees[label]), rev], cwd=REPO, check=True,
                           capture_output=True)
        try:
            metrics = {label: run_all(tree, tmp / f"out_{label}", commands) for label, tree in trees.items()}
            same_everywhere = True
            for name in commands:
                a, b = metrics["before"][name], metrics["after"][name]
                differ = {k: (a[k], b[k]) for k in set(a) & set(b) if k not in TIMING and a[k] != b[k]}
                wa, wb = weights(tmp / "out_before" / name), weights(tmp / "out_after" / name)
                wdiff = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
                same = not differ and wdiff == 0.0
                same_everywhere &= same
                shown = ", ".join(f"{k}={a[k]}" for k in ("nmi", "acc", "digit_acc", "query_acc") if k in a)
                print(f"{name:14s} {'identical' if same else 'DIFFERENT'}  {shown}  max |w_before - w_after| = "
                      f"{wdiff:.3g}" + (f"  differing: {differ}" if differ else ""))
            print("all identical" if same_everywhere else "some differ")
        finally:
            for label, tree in trees.items():
                if tree != REPO:
                    subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
