"""``gedi-core`` (= ``python -m gedi_core``): train and evaluate GEDI and the baselines.

Under ``torchrun --nproc_per_node=N -m gedi_core train ...`` each process trains one DDP rank."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from gedi_core import jsonsafe
from gedi_core.config import Flag, TrainConfig, dotted_to_nested, flags_of, parse_set, read_config_file
from gedi_core.errors import GediError

#: the flags of ``gedi-core train``, built from the config's field declarations (gedi_core.config.schema)
TRAIN_FLAGS: list[Flag] = flags_of(TrainConfig)


def add_config_flags(parser: argparse.ArgumentParser, flags: Sequence[Flag]) -> None:
    """``flags`` (switches last), then ``--config`` and ``--set``; each flag's help ends with its key."""
    for f in flags:
        if f.type is not bool:
            parser.add_argument(f.flag, dest=f.key, type=f.type, default=None, help=f"{f.help} [{f.key}]")
    for f in flags:
        if f.type is bool:
            parser.add_argument(f.flag, dest=f.key, action="store_const", const=True, default=None,
                                help=f"{f.help} [{f.key}=true]")
    parser.add_argument("--config", default=None, help="YAML/JSON config file (flags override it)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config key, e.g. sgld.steps=5")


def add_run_flags(parser: argparse.ArgumentParser, out_help: str) -> None:
    """``--out``, ``--resume`` and ``--no-progress``: the flags every training command has."""
    parser.add_argument("--out", default=None, help=out_help)
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def flag_overrides(args: argparse.Namespace, flags: Sequence[Flag]) -> dict[str, Any]:
    """The config keys the given flags and ``--set`` items set, as a nested mapping."""
    values = {f.key: getattr(args, f.key) for f in flags if getattr(args, f.key, None) is not None}
    values.update(parse_set(args.set))
    return dotted_to_nested(values)


def resolve_train_config(args: argparse.Namespace) -> TrainConfig:
    """Data-set defaults < method defaults < config file < flags."""
    from gedi_core.presets import resolve_config

    layers = [(str(args.config), read_config_file(args.config))] if args.config else []
    layers.append(("command-line flags", flag_overrides(args, TRAIN_FLAGS)))
    return resolve_config(layers)


def cmd_train(args: argparse.Namespace) -> int:
    import gedi_core.data  # noqa: F401  (registers data sets)
    from gedi_core.train import train

    cfg = resolve_train_config(args)
    metrics = train(cfg, out=args.out, resume=args.resume, progress=not args.no_progress)
    if metrics:  # under torchrun only rank 0 reports
        print(json_line(metrics))
    return 0


def _data_overrides(args: argparse.Namespace) -> dict[str, Any]:
    over: dict[str, Any] = {}
    if args.data_root is not None:
        over["data_root"] = args.data_root
    if args.test_subset is not None:
        over["test_subset"] = args.test_subset
    if getattr(args, "train_subset", None) is not None:
        over["train_subset"] = args.train_subset
    if args.download:
        over["download"] = True
    return over


def cmd_eval(args: argparse.Namespace) -> int:
    import gedi_core.data  # noqa: F401
    from gedi_core.devices import resolve_device
    from gedi_core.evaluation.commands import evaluate_run

    resolve_device(args.device)
    metrics = evaluate_run(
        args.run, what=args.what.split(","), device=args.device, data_overrides=_data_overrides(args),
        ood_datasets=args.ood_dataset or [], fid_samples=args.fid_samples, fid_steps=args.fid_steps,
        fid_features=args.fid_features, out=args.out, progress=not args.no_progress, ood_root=args.ood_root,
    )
    print(json_line(metrics))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import gedi_core.data  # noqa: F401
    from gedi_core.devices import resolve_device
    from gedi_core.evaluation import load_run, save_samples
    from gedi_core.runfolder import check_output_file

    resolve_device(args.device)
    for flag, value, low in (("--n", args.n, 1), ("--steps", args.steps, 0)):
        if value < low:
            raise GediError(f"{flag} must be >= {low}, got {value}")
    if args.out is None:
        args.out = str(Path(args.run) / f"samples_{args.steps}.png")
    check_output_file(args.out)  # before the run is loaded: never over an existing file or a run's own
    method, _, _ = load_run(args.run, device=args.device, data_overrides=_data_overrides(args))
    save_samples(method, args.out, n=args.n, steps=args.steps, step_size=args.step_size, noise=args.noise,
                 from_buffer=args.from_buffer, seed=args.seed, sort_by_cluster=not args.unsorted)
    print(json.dumps({"samples": args.out, "n": args.n, "steps": args.steps}))
    return 0


def cmd_fid_features(args: argparse.Namespace) -> int:
    import gedi_core.data  # noqa: F401
    from gedi_core.evaluation.classifier_features import feature_extractor_file

    print(json_line(feature_extractor_file(args.dataset, args.out, args.data_root, args.download,
                                           args.train_subset, args.test_subset, args.epochs, args.seed)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gedi-core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train one run; prints its final metrics as one JSON line last")
    add_config_flags(p, TRAIN_FLAGS)
    add_run_flags(p, "run folder (config, log.csv, metrics.json, checkpoint, figures)")
    p.set_defaults(func=cmd_train)

    def run_flags(q: argparse.ArgumentParser) -> None:
        q.add_argument("--run", required=True, help="run folder written by 'gedi-core train --out'")
        q.add_argument("--device", default="cpu", help="torch device")
        q.add_argument("--data-root", default=None, help="folder with local data files (torchvision layout)")
        q.add_argument("--download", action="store_true", help="let torchvision download missing data files")
        q.add_argument("--test-subset", type=int, default=None, help="evaluate on the first N test images only")

    e = sub.add_parser("eval", help="evaluate a run: nmi, probe, ood, fid, samples; prints one JSON line")
    run_flags(e)
    e.add_argument("--what", default="nmi,probe,ood", help="comma list of nmi, probe, ood, fid, samples")
    e.add_argument("--train-subset", type=int, default=None, help="probe/k-means on the first N training images")
    e.add_argument("--ood-dataset", action="append", metavar="NAME",
                   help="out-of-distribution data set for the AUROC (repeatable), e.g. svhn, cifar100; its test "
                        "split, or its training split where only that one exists")
    e.add_argument("--ood-root", default=None,
                   help="data root of the --ood-dataset sets (default: the run's / --data-root)")
    e.add_argument("--fid-samples", type=int, default=1000, help="SGLD samples (and real test images) for FID")
    e.add_argument("--fid-steps", type=int, default=500, help="SGLD steps per FID / grid sample")
    e.add_argument("--fid-features", default=None,
                   help="feature extractor for FID: inception (default), module.path:factory or a TorchScript file")
    e.add_argument("--out", default=None, help="write eval.json (and samples.png) here (default: the run folder)")
    e.add_argument("--no-progress", action="store_true", help="hide progress messages")
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("sample", help="SGLD samples of a run's energy as a PNG grid (paper Fig. 6)")
    run_flags(s)
    s.add_argument("--n", type=int, default=100, help="number of samples")
    s.add_argument("--steps", type=int, default=500, help="SGLD steps from uniform noise")
    s.add_argument("--step-size", type=float, default=None, help="SGLD step size (default: the run's)")
    s.add_argument("--noise", type=float, default=None, help="SGLD noise (default: the run's)")
    s.add_argument("--from-buffer", action="store_true", help="start from the run's replay buffer, not noise")
    s.add_argument("--unsorted", action="store_true", help="do not sort the grid by predicted cluster")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None, help="PNG path (default: RUN/samples_<steps>.png)")
    s.set_defaults(func=cmd_sample)

    f = sub.add_parser("fid-features", help="train a small classifier on a data set's training split and write it "
                                            "as the FID feature extractor (offline FID: eval --fid-features FILE)")
    f.add_argument("--dataset", required=True, help="image data set, e.g. fashion-mnist, mnist, cifar10")
    f.add_argument("--data-root", default=None, help="folder with local data files (torchvision layout)")
    f.add_argument("--download", action="store_true", help="let torchvision download missing data files")
    f.add_argument("--train-subset", type=int, default=0, help="train on the first N training images only (0: all)")
    f.add_argument("--test-subset", type=int, default=0, help="report accuracy on the first N test images (0: all)")
    f.add_argument("--epochs", type=int, default=2, help="classifier training epochs")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", required=True, help="TorchScript file to write (must not exist), e.g. features.pt")
    f.set_defaults(func=cmd_fid_features)
    return parser


def json_line(value: Any) -> str:
    """The one JSON line a command prints (sorted keys; NaN and infinities as ``null``)."""
    return jsonsafe.dumps(value)


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
