"""DeepProbLog's own MNIST-addition script, offline, as shipped and ported to GEDI, side by side.

Runs the installed ``deepproblog/examples/MNIST/addition.py`` itself (its source, executed), with
only these changes:

* its data module ``deepproblog.examples.MNIST.data`` is DeepProbLog's own source, executed over
  local MNIST files instead of downloading: the pools of ``gedi_nesy.data.mnist`` (with only the
  official test split t10k at ``--data-root``: 8000 training / 2000 test images, split with
  ``--split-seed``), written as the idx files torchvision reads; ``--validation F`` carves a share
  of the training pool (seeded by ``--seed``) that stands in for the test images, the test pool
  then not being written at all;
* its settings (``N = 1``, the training pairs, batch size 2, one epoch) from the flags: the lines
  named in ``SETTINGS`` are replaced, and each must be found exactly once;
* ``--port gedi``: the port of the README (``PORT``: three changed lines), or ``--port
  gedi-off`` the same port with the GEDI terms switched off (``train_model(..., gedi=False)``);
  ``--port engine``: only the engine swapped (``ENGINE_PORT``: DeepProbLog's ``MNIST_Net`` and
  its own ``train_model`` with ``BatchedEngine``).

``torch.manual_seed(--seed)`` is set before the script runs (the script sets no seed itself).
Printed: one JSON line per run with the script's own sum accuracy (``get_confusion_matrix`` on
its test queries), the digit accuracy of the trained network on every held-out image, its
predicted-class histogram, the training time and the GEDI terms' means.

    python -m experiments.nesy.deepproblog_script --data-root ../shared/data/MNIST/raw --pairs 1000
    python -m experiments.nesy.deepproblog_script --data-root ../shared/data/MNIST/raw --pairs 1000 --port gedi
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch


# the script's lines the flags replace (each must occur exactly once in the installed script)
SETTINGS = {
    "N = 1": "N = {digits}",
    'train_set = addition(N, "train")': 'train_set = addition(N, "train"){subset}',
    'test_set = addition(N, "test")': 'test_set = addition(N, "test"){test_subset}',
    "loader = DataLoader(train_set, 2, False)": "loader = DataLoader(train_set, {batch}, False)",
    "train = train_model(model, loader, 1, log_iter=100, profile=0)":
        "train = train_model(model, loader, {epochs}, log_iter=100, profile=0{gedi_arg})",
}

# the port: DeepProbLog's line -> gedi_nesy's (gedi_nesy/README.md shows this diff)
PORT = {
    "from deepproblog.train import train_model": "from gedi_nesy import BatchedEngine, gedi_network, train_model",
    'net = Network(network, "mnist_net", batching=True)': 'net = gedi_network(network, "mnist_net", batching=True)',
    "    model.set_engine(ExactEngine(model), cache=True)": "    model.set_engine(BatchedEngine(model), cache=True)",
}
# the engine alone: DeepProbLog's script, network and train_model, with BatchedEngine
ENGINE_PORT = {
    "from deepproblog.engines import ApproximateEngine, ExactEngine":
        "from deepproblog.engines import ApproximateEngine, ExactEngine\nfrom gedi_nesy import BatchedEngine",
    "    model.set_engine(ExactEngine(model), cache=True)": "    model.set_engine(BatchedEngine(model), cache=True)",
}
PORTS = ("none", "engine", "gedi", "gedi-off")


def deepproblog_file(*parts: str) -> Path:
    import deepproblog

    return Path(deepproblog.__file__).parent.joinpath(*parts)


def replace_lines(source: str, table: dict[str, str], what: str) -> str:
    """``source`` with each line ``old`` of ``table`` replaced by ``table[old]``; each must occur once."""
    lines = source.split("\n")
    for old, new in table.items():
        hits = [i for i, line in enumerate(lines) if line.rstrip() == old]
        if len(hits) != 1:
            raise SystemExit(f"{what}: the line {old!r} occurs {len(hits)} times in the installed script "
                             f"(another DeepProbLog version?)")
        lines[hits[0]] = new
    return "\n".join(lines)


def gedi_arg(port: str, gedi_kwargs: str, train_args: str = "") -> str:
    """The arguments the ported ``train_model`` line gets: none (the default objective), ``gedi=False``
    (``gedi-off``), or the default objective with other arguments (``--gedi gen=0,prior=5``); with
    ``--port gedi``, ``train_args`` are more of ``gedi_nesy.train_model``'s (``rename_every=0``)."""
    if port == "gedi-off":
        return ", gedi=False"
    extra = f", {train_args}" if port == "gedi" and train_args else ""
    if port == "gedi" and gedi_kwargs:
        return f", gedi=__import__('gedi_nesy.plugin').plugin.default_objective(model, loader, {gedi_kwargs})" + extra
    return extra


def script_source(digits: int, pairs: int, batch: int, epochs: int, port: str, gedi_kwargs: str = "",
                  test_pairs: int = 0, train_args: str = "") -> str:
    source = deepproblog_file("examples", "MNIST", "addition.py").read_text()
    settings = {old: new.format(digits=digits, subset=f".subset({pairs})" if pairs > 0 else "", batch=batch,
                                test_subset=f".subset({test_pairs})" if test_pairs > 0 else "",
                                epochs=epochs, gedi_arg=gedi_arg(port, gedi_kwargs, train_args))
                for old, new in SETTINGS.items()}
    source = replace_lines(source, settings, "settings")
    if port == "engine":
        source = replace_lines(source, ENGINE_PORT, "engine port")
    elif port != "none":
        source = replace_lines(source, PORT, "port")
    return source


def port_diff() -> str:
    """The port as a unified diff of the installed script (what gedi_nesy/README.md shows)."""
    import difflib

    source = deepproblog_file("examples", "MNIST", "addition.py").read_text()
    ported = replace_lines(source, PORT, "port")
    return "".join(difflib.unified_diff(source.splitlines(True), ported.splitlines(True), "addition.py",
                                        "addition.py (GEDI)", n=0))


def write_idx(folder: Path, prefix: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    """MNIST idx files (uncompressed) of images in ``[-1, 1]`` (N, 1, 28, 28) and their labels."""
    pixels = ((images.squeeze(1) + 1.0) / 2.0 * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    n, h, w = pixels.shape
    with open(folder / f"{prefix}-images-idx3-ubyte", "wb") as f:
        f.write(np.array([2051, n, h, w], dtype=">i4").tobytes() + pixels.tobytes())
    with open(folder / f"{prefix}-labels-idx1-ubyte", "wb") as f:
        f.write(np.array([2049, n], dtype=">i4").tobytes() + labels.numpy().astype(np.uint8).tobytes())


def offline_data_module(root: Path, train: tuple[torch.Tensor, torch.Tensor],
                        test: tuple[torch.Tensor, torch.Tensor]) -> types.ModuleType:
    """DeepProbLog's ``examples/MNIST/data`` module, executed with its data folder at ``root``
    holding ``train`` and ``test`` as MNIST's raw files (torchvision then finds them: no download)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    write_idx(raw, "train", *train)
    write_idx(raw, "t10k", *test)
    path = deepproblog_file("examples", "MNIST", "data", "__init__.py")
    name = "deepproblog.examples.MNIST.data"
    module = types.ModuleType(name)
    module.__file__ = str(root / "__init__.py")
    module.__package__ = name
    module.__path__ = [str(root)]
    sys.modules[name] = module
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    return module


def digit_report(net, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Digit accuracy of a DeepProbLog ``Network`` on ``images`` and its predicted-class histogram."""
    module = net.network_module
    module.eval()
    with torch.no_grad():
        pred = torch.cat([module(images[i:i + 500]).argmax(-1) for i in range(0, len(images), 500)])
    module.train()
    return {"digit_acc": round(float((pred == labels).float().mean()), 4),
            "predicted": torch.bincount(pred, minlength=10).tolist()}


def training_losses(scope: dict[str, Any]) -> dict[str, Any]:
    """The trained script's ``L_NESY`` over its training queries (``train_nesy``, the label-free
    score the plugin's restarts judge by) and, where ``train_model`` restarted, each start's."""
    from gedi_nesy.plugin import loader_queries
    from gedi_nesy.restarts import training_nesy

    starts = getattr(scope["train"], "starts", None)
    return {"train_nesy": round(training_nesy(scope["model"], loader_queries(scope["loader"])), 4),
            **({"starts": [round(s, 4) for s in starts]} if starts else {})}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from gedi_nesy.data import carve_validation, mnist

    pools = mnist(args.data_root, 0.2, args.split_seed, download=False)
    if args.validation > 0:
        pools = carve_validation(pools, args.validation, args.seed)
    held_out = (pools.eval_x, pools.eval_y)
    source = script_source(args.digits, args.pairs, args.batch_size, args.epochs, args.port, args.gedi,
                           args.test_pairs, args.train_args)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        offline_data_module(work / "data", (pools.train_x, pools.train_y), held_out)
        (work / "models").mkdir()
        (work / "models" / "addition.pl").write_text(
            deepproblog_file("examples", "MNIST", "models", "addition.pl").read_text())
        cwd = os.getcwd()
        os.chdir(work)
        torch.manual_seed(args.seed)
        scope: dict[str, Any] = {"__name__": "__main__"}
        out = io.StringIO()
        t0 = time.time()
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(source, "deepproblog/examples/MNIST/addition.py", "exec"), scope)
        finally:
            os.chdir(cwd)
        seconds = time.time() - t0
    comments = scope["train"].logger.comments
    fitted = training_losses(scope) if args.port != "none" else {}
    accuracy = next(float(c.split()[1]) for c in comments if c.startswith("Accuracy"))
    result = {"port": args.port, "gedi": args.gedi, "train_args": args.train_args, "digits": args.digits, "pairs": len(scope["train_set"]), "test_pairs": len(scope["test_set"]), "batch": args.batch_size,
              "epochs": args.epochs, "seed": args.seed, "split_seed": args.split_seed,
              "evaluated_on": pools.evaluated_on, "sum_acc": round(accuracy, 4),
              **digit_report(scope["net"], *held_out), "seconds": round(seconds, 1),
              "gedi_terms": {k: round(v, 4) for k, v in getattr(scope["train"], "gedi_terms", {}).items()},
              **fitted}
    if args.verbose:
        print(out.getvalue(), file=sys.stderr)
    return result


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", help="folder with MNIST raw files (e.g. ../shared/data/MNIST/raw)")
    ap.add_argument("--diff", action="store_true", help="print the port as a diff of the installed script and stop")
    ap.add_argument("--port", choices=PORTS, default="none", help="none: DeepProbLog as shipped (default)")
    ap.add_argument("--digits", type=int, default=1, help="N, digits per number (the script's N)")
    ap.add_argument("--pairs", type=int, default=0, help="training queries (0: all the pool gives)")
    ap.add_argument("--test-pairs", type=int, default=0,
                    help="test queries the script's get_confusion_matrix scores (0: all the held-out pool gives)")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the 8000/2000 split of t10k")
    ap.add_argument("--validation", type=float, default=0.0,
                    help="carve this share of the training pool as the held-out images (choosing); 0: test pool")
    ap.add_argument("--gedi", default="", help="with --port gedi: GEDILoss arguments, e.g. 'gen=0, prior=5'")
    ap.add_argument("--train-args", default="", help="with --port gedi: more gedi_nesy.train_model arguments, "
                                                     "e.g. 'rename_every=0' or 'restarts=1, restart_above=0.5'")
    ap.add_argument("--verbose", action="store_true", help="the script's own output on stderr")
    return ap


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.diff:
        print(port_diff(), end="")
        return {}
    if args.data_root is None:
        raise SystemExit("--data-root is required (a folder with MNIST's raw files)")
    if args.digits < 1:
        raise SystemExit("--digits must be >= 1")
    result = run(args)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
