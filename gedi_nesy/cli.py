"""``gedi-nesy`` (= ``python -m gedi_nesy``): train GEDI networks inside DeepProbLog programs.

    gedi-nesy train --program programs/addition.pl --data mnist --data-root DIR \\
        --examples 1000 --arm gedi+nesy --seed 0 --out runs/x
    gedi-nesy eval --run runs/x

The final metrics are printed as one JSON line, last.  Input errors (program, network
names, domains, queries, images, data root, config) are reported as one line, exit 2,
before any training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from gedi_core.cli import add_config_flags, add_run_flags, flag_overrides, json_line, run_cli
from gedi_core.config import read_config_file
from gedi_nesy.config import NesyConfig, build_nesy_config
from gedi_nesy.limits import DEFAULT_GROUND_TIMEOUT, timeout_flag
from gedi_nesy.run_setup import prepare, resolve_path  # prepare re-exported: gedi_nesy.cli.prepare

# flag -> dotted config key
NESY_FLAGS: dict[str, tuple[str, type, str]] = {
    "--program": ("program", str, "ProbLog program (.pl) with nn(...) predicates"),
    "--network": ("networks", str, "name(s) the GEDI network(s) are registered under, comma-separated"),
    "--arm": ("arm", str, "nesy | gedi | gedi+nesy"),
    "--data": ("data.name", str, "digits (embedded, offline) | mnist | npz"),
    "--data-root": ("data.data_root", str, "folder with the MNIST raw files (t10k-* and/or train-*)"),
    "--images": ("data.images", str, ".npz with train_images, test_images, test_labels"),
    "--queries": ("data.queries", str, "training queries, one ground ProbLog query per line"),
    "--test-queries": ("data.test_queries", str, "test queries for query_acc (same syntax)"),
    "--task": ("data.task", str, "example generator: auto | addition | sum | multi_addition"),
    "--examples": ("data.examples", int, "number of training examples"),
    "--digits": ("data.digits", int, "multi_addition: digits per number (default 2); queries are cut from seeded "
                 "permutations of the training pool, 2N distinct images each: pool / 2N queries use each image "
                 "once, more queries reuse images in further permutations"),
    "--test-examples": ("data.test_examples", int, "number of generated test queries (validation queries with --validation)"),
    "--seed": ("seed", int, "random seed (data split, examples, initialisation)"),
    "--split-seed": ("data.split_seed", int, "seed of the train/test split of a single image set (-1: --seed)"),
    "--validation": ("data.validation", float, "share of the training pool held out as the validation pool: "
                     "evaluate there, never read the test pool (for choosing hyperparameters; 0: off)"),
    "--epochs": ("epochs", int, "epochs (0: paper default 500/100/25 for 100/1000/10000 examples)"),
    "--batch-size": ("batch_size", int, "queries per batch"),
    "--lr": ("lr", float, "Adam learning rate"),
    "--weight-decay": ("weight_decay", float, "Adam L2 weight decay"),
    "--w-nesy": ("weights.nesy", float, "weight of L_NESY"),
    "--w-gen": ("weights.gen", float, "weight of L_GEN"),
    "--w-prior": ("weights.prior", float, "weight of L_PRIOR"),
    "--w-inv": ("weights.inv", float, "weight of L_INV"),
    "--prior": ("prior", str, "entropy | uniform"),
    "--prior-target": ("prior_target", str, "uniform | program: the class prior the training queries imply"),
    "--prior-window": ("prior_window", float, "images over which L_PRIOR estimates the class marginal (0: the batch)"),
    "--rename-every": ("rename_every", int, "epochs between searches for a renaming of the clusters that lowers the "
                       "training L_NESY (label-free repair of wrongly named digits; 0: off)"),
    "--rename-queries": ("rename_queries", int, "training queries the renaming search scores"),
    "--restarts": ("restarts", int, "starts drawn afresh while a start ends with training L_NESY above "
                   "--restart-above (the lowest is kept; OUT/start<k> each; 0: one start)"),
    "--restart-above": ("restart_above", float, "training L_NESY above which a start is restarted"),
    "--sgld-steps": ("sgld.steps", int, "SGLD steps per batch"),
    "--sgld-step-size": ("sgld.step_size", float, "SGLD step size"),
    "--sgld-noise": ("sgld.noise", float, "SGLD noise standard deviation"),
    "--buffer-size": ("sgld.buffer_size", int, "replay buffer size"),
    "--reinit-freq": ("sgld.reinit_freq", float, "replay buffer reinitialisation frequency"),
    "--sgld-chains": ("sgld.chains", int, "SGLD chains per step (0: one per input image)"),
    "--sgld-every": ("sgld.every", int, "run SGLD every N steps, re-scoring the last samples in between (1: every step)"),
    "--aug-noise": ("data.aug_noise", float, "Gaussian-noise augmentation sigma"),
    "--train-shift": ("data.train_shift", int, "random shift in pixels of the training images (0: off)"),
    "--tau": ("model.tau", float, "temperature of the cluster head"),
    "--num-clusters": ("model.num_clusters", int, "network outputs (must equal the nn domain size)"),
    "--backbone": ("model.backbone", str, "backbone (lenet, mlp, resnet8)"),
    "--eval-every": ("eval_every", int, "epochs between digit accuracy / NMI evaluations"),
    "--device": ("device", str, "torch device"),
    "--engine": ("engine", str, "inference: batched (tensorised circuits, default) | exact (DeepProbLog's ExactEngine)"),
    "--compile-cache": ("compile_cache", str, "folder keeping the batched engine's compiled query shapes across runs"),
}


def resolve_config(args: argparse.Namespace) -> NesyConfig:
    """Defaults < config file < flags."""
    layers: list[tuple[str, dict[str, Any]]] = []
    if args.config:
        layers.append((str(args.config), read_config_file(args.config)))
    layers.append(("command-line flags", flag_overrides(args, NESY_FLAGS)))
    return build_nesy_config(layers)


def cmd_train(args: argparse.Namespace) -> int:
    """Train one run; under ``torchrun --nproc_per_node=N -m gedi_nesy train ...`` each process
    is one rank (gloo on CPU, NCCL on GPUs) and only rank 0 prints the metrics."""
    cfg = resolve_config(args)  # first: a bad flag is reported before torch is imported
    from dataclasses import replace

    from gedi_core.distributed import barrier, cleanup, init_distributed
    from gedi_core.runfolder import RunFolder
    from gedi_nesy.train import input_files, train_nesy

    info, device = init_distributed(cfg.device)
    run = None
    try:
        cfg.device = str(device)  # cuda:LOCAL_RANK under torchrun
        if args.out is not None:
            # with restarts OUT gets its checkpoint only at the end; --resume applies to OUT/start<k>
            resume = args.resume and (not cfg.restarts or (Path(args.out) / "checkpoint.pt").is_file())
            run = RunFolder(args.out, {}, resume, info.is_main)
            run.inputs = input_files(replace(cfg, program=resolve_path(cfg.program) or cfg.program))
            run.open()
        barrier(info)
        pools, model, train_q, test_q = prepare(cfg, quiet=not info.is_main, ground_timeout=args.ground_timeout)
        metrics = train_nesy(cfg, model, train_q, pools, test_q, out=run, resume=args.resume,
                             progress=not args.no_progress and info.is_main, dist=info)
    finally:
        if run is not None:
            run.unlock()
        cleanup(info)
    if metrics:
        print(json_line(metrics))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from gedi_core.checkpoint import loop_state
    from gedi_nesy.evaluation import evaluate_nesy
    from gedi_nesy.predict import load_run_weights, run_config
    from gedi_nesy.program import inspect_program, network_domains

    run = Path(args.run)
    cfg, state = run_config(run)
    pools, model, _, test_q = prepare(cfg)
    load_run_weights(model.networks, state, str(run / "checkpoint.pt"))
    domains = network_domains(inspect_program(cfg.program))
    metrics = {**evaluate_nesy(model, pools, domains, test_q), "epoch": loop_state(state)["epoch"], "run": str(run)}
    print(json_line(metrics))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from gedi_core.evaluation.load import warn_if_unfinished
    from gedi_nesy.predict import predict

    summary = predict(args.run, args.images, args.queries, args.out)
    warn_if_unfinished(args.run, "gedi-nesy")  # after the checks: an error stays the only line
    print(json_line(summary))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from gedi_nesy.predict import export_networks

    print(json_line(export_networks(args.run, args.out)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gedi-nesy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train one run; prints its final metrics as one JSON line last")
    add_config_flags(p, NESY_FLAGS)
    add_run_flags(p, "run folder (config.yaml, log.csv, metrics.json, checkpoint.pt)")
    p.add_argument("--ground-timeout", type=timeout_flag, default=DEFAULT_GROUND_TIMEOUT, metavar="SECONDS",
                   help="time limit for grounding and compiling one query (0: none) [default: %(default)g]")
    p.set_defaults(func=cmd_train)
    e = sub.add_parser("eval", help="evaluate a run folder's checkpoint; prints one JSON line")
    e.add_argument("--run", required=True, help="run folder written by gedi-nesy train --out")
    e.set_defaults(func=cmd_eval)
    pr = sub.add_parser("predict", help="class probabilities and energy per image, probabilities per query (CSV, JSON)")
    pr.add_argument("--run", required=True, help="run folder written by gedi-nesy train --out")
    pr.add_argument("--images", required=True, help=".npz with an array 'images' (or 'test_images'): (N, [1,] H, W)")
    pr.add_argument("--queries", default=None,
                    help="query file over tensor(images(I)); free variables give every answer, e.g. sum(tensor("
                         "images(0)), tensor(images(1)), X).")
    pr.add_argument("--out", default=None, help="folder for predictions.csv/.json, queries.csv/.json (default: --run)")
    pr.set_defaults(func=cmd_predict)
    ex = sub.add_parser("export", help="write only the networks (weights, model config, input shape) to a file")
    ex.add_argument("--run", required=True, help="run folder written by gedi-nesy train --out")
    ex.add_argument("--out", required=True, help="file to write, e.g. net.pt (load: gedi_nesy.load_network(path))")
    ex.set_defaults(func=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv, "gedi-nesy")


if __name__ == "__main__":
    sys.exit(main())
