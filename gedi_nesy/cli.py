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
from gedi_core.config import flags_of, read_config_file
from gedi_nesy.config import NesyConfig, build_nesy_config
from gedi_nesy.limits import DEFAULT_GROUND_TIMEOUT, timeout_flag
from gedi_nesy.run_setup import prepare, resolve_path  # prepare re-exported: gedi_nesy.cli.prepare

#: the flags of ``gedi-nesy train``, built from the config's field declarations (gedi_nesy.config)
NESY_FLAGS = flags_of(NesyConfig)


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
