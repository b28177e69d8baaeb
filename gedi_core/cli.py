"""``gedi-core`` (= ``python -m gedi_core``): train and evaluate GEDI and the baselines."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Sequence

from gedi_core.config import TrainConfig, build_config, dotted_to_nested, parse_set, read_config_file
from gedi_core.errors import GediError

# flag -> dotted config key
TRAIN_FLAGS: dict[str, tuple[str, type, str]] = {
    "--dataset": ("data.name", str, "data set name (moons, circles, ...)"),
    "--method": ("method", str, "method name (gedi, gedi_no_gen, gedi_no_inv, gedi_no_prior, jem, barlow, swav)"),
    "--seed": ("seed", int, "random seed"),
    "--iters": ("iters", int, "training iterations"),
    "--batch-size": ("batch_size", int, "batch size"),
    "--lr": ("lr", float, "Adam learning rate"),
    "--weight-decay": ("weight_decay", float, "Adam weight decay"),
    "--w-gen": ("weights.gen", float, "weight of L_GEN"),
    "--w-inv": ("weights.inv", float, "weight of L_INV"),
    "--w-prior": ("weights.prior", float, "weight of L_PRIOR"),
    "--sgld-steps": ("sgld.steps", int, "SGLD steps per iteration"),
    "--sgld-step-size": ("sgld.step_size", float, "SGLD step size"),
    "--sgld-noise": ("sgld.noise", float, "SGLD noise standard deviation"),
    "--buffer-size": ("sgld.buffer_size", int, "replay buffer size"),
    "--reinit-freq": ("sgld.reinit_freq", float, "replay buffer reinitialisation frequency"),
    "--tau": ("model.tau", float, "temperature of the cluster head"),
    "--num-clusters": ("model.num_clusters", int, "number of clusters c"),
    "--backbone": ("model.backbone", str, "backbone (mlp, resnet8, lenet)"),
    "--width": ("model.width", int, "ResNet-8 channels F"),
    "--n-train": ("data.n_train", int, "training points (toy data)"),
    "--aug-noise": ("data.aug_noise", float, "Gaussian-noise augmentation sigma"),
    "--data-root": ("data.data_root", str, "folder with local data files (torchvision layout)"),
    "--device": ("device", str, "torch device (cpu, cuda, cuda:1)"),
    "--log-every": ("log_every", int, "log and monitor every N iterations"),
    "--ckpt-every": ("ckpt_every", int, "checkpoint every N iterations"),
}


def add_config_flags(parser: argparse.ArgumentParser, flags: dict[str, tuple[str, type, str]]) -> None:
    for flag, (key, typ, help_text) in flags.items():
        parser.add_argument(flag, dest=key, type=typ, default=None, help=f"{help_text} [{key}]")
    parser.add_argument("--config", default=None, help="YAML/JSON config file (flags override it)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config key, e.g. sgld.steps=5")


def flag_overrides(args: argparse.Namespace, flags: dict[str, tuple[str, type, str]]) -> dict[str, Any]:
    values = {key: getattr(args, key) for key, _, _ in flags.values() if getattr(args, key) is not None}
    values.update(parse_set(args.set))
    return dotted_to_nested(values)


def resolve_train_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults < method defaults < config file < flags."""
    from gedi_core.methods import get_spec

    file_layer = read_config_file(args.config) if args.config else {}
    flag_layer = flag_overrides(args, TRAIN_FLAGS)
    method = flag_layer.get("method", file_layer.get("method", TrainConfig.method))
    spec = get_spec(method)
    layers = [(f"defaults of method '{method}'", spec.defaults)]
    if args.config:
        layers.append((str(args.config), file_layer))
    layers.append(("command-line flags", flag_layer))
    return build_config(TrainConfig, layers).validate()


def cmd_train(args: argparse.Namespace) -> int:
    import gedi_core.data  # noqa: F401  (registers data sets)
    from gedi_core.training import train

    cfg = resolve_train_config(args)
    metrics = train(cfg, out=args.out, resume=args.resume, progress=not args.no_progress)
    print(json.dumps(metrics, sort_keys=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gedi-core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train one run; prints its final metrics as one JSON line last")
    add_config_flags(p, TRAIN_FLAGS)
    p.add_argument("--out", default=None, help="run folder (config, log.csv, metrics.json, checkpoint, figures)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_train)
    return parser


def run_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None, prog: str) -> int:
    """Parse, dispatch, and turn user errors into one line on stderr with exit status 2."""
    args = parser.parse_args(argv)
    try:
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except GediError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv, "gedi-core")


if __name__ == "__main__":
    sys.exit(main())
