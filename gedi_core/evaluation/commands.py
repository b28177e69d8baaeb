"""``gedi-core eval``: every evaluation of a run folder, written to ``eval.json``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable

from gedi_core.errors import GediError
from gedi_core.runfolder import check_output_folder, write_json

KNOWN = ("nmi", "probe", "ood", "fid", "samples")


SAMPLE_KEYS = ("samples_png", "samples_buffer_png")  # the grids an evaluation wrote, recorded in eval.json


def previous_eval(folder: Path) -> dict[str, Any]:
    """The ``eval.json`` an earlier evaluation wrote in ``folder`` ({} when there is none)."""
    path = folder / "eval.json"
    if not path.is_file():
        return {}
    try:
        found = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise GediError(f"{path}: cannot read it ({exc}); move it away to evaluate again") from None
    if not isinstance(found, dict):
        raise GediError(f"{path}: holds a {type(found).__name__}, not the metrics of an evaluation")
    return found


def evaluate_run(run: str | Path, what: Iterable[str] = ("nmi", "probe", "ood"), device: str = "cpu",
                 data_overrides: dict | None = None, ood_datasets: Iterable[str] = (), fid_samples: int = 1000,
                 fid_steps: int = 500, fid_features: str | None = None, out: str | Path | None = None,
                 progress: bool = True, ood_root: str | None = None) -> dict[str, Any]:
    """Evaluate run folder ``run``; returns (and writes to ``OUT/eval.json``) a flat metrics dict.

    - ``nmi``: NMI / ACC / ARI of the cluster assignments on the test split (on the validation
      split carved from the training set for a run with ``data.validation``: ``evaluated_on``);
    - ``probe``: linear-probe accuracy on frozen backbone features (Table 10);
    - ``ood``: AUROC of ``s(x) = -||dE/dx||`` (and of ``-E(x)``), test split vs each ``ood_datasets``
      test split (Tables 5, 11, 12), read from ``ood_root`` when given (else the run's data root);
      an image set with only its training split there (MNIST without t10k) gives that split;
    - ``fid``: FID between ``fid_samples`` SGLD samples (``fid_steps`` steps from uniform noise) and
      as many test images; for a run with a replay buffer (L_GEN) also ``fid_buffer``, the samples
      continued for ``fid_steps`` steps from the buffer's persistent chains (JEM's way of sampling);
    - ``samples``: a 10x10 grid of SGLD samples (``fid_steps`` steps) as ``samples.png`` (Fig. 6),
      and from the buffer as ``samples_buffer.png`` where there is one.
    """
    from gedi_core.evaluation import fid_score, linear_probe, load_run, ood_auroc, sample_images, save_samples
    from gedi_core.evaluation.clusters import evaluate_clustering
    from gedi_core.evaluation.ood import ood_images

    what = [w.strip() for w in what if w.strip()]
    for w in what:
        if w not in KNOWN:
            raise GediError(f"--what: unknown evaluation '{w}' (known: {', '.join(KNOWN)})")
    # the outputs are checked before any work: eval.json and what it records are this command's own
    out_dir = Path(out if out is not None else run)
    previous = previous_eval(out_dir)
    owned = ("eval.json", *(Path(previous[k]).name for k in SAMPLE_KEYS if isinstance(previous.get(k), str)))
    pngs = ("samples.png", "samples_buffer.png") if "samples" in what else ()
    out_dir = check_output_folder(out_dir, ("eval.json", *pngs), owned=owned)
    method, data, cfg = load_run(run, device=device, data_overrides=data_overrides)
    fid_metric = None
    if "fid" in what:  # fail fast, before the other evaluations, when FID cannot run
        from gedi_core.evaluation.fid import make_fid_metric

        fid_metric = make_fid_metric(fid_features, tuple(data.input_shape[-2:]))
    out_dir.mkdir(exist_ok=True)
    result: dict[str, Any] = {"run": str(run), "method": cfg.method, "dataset": cfg.data.name, "seed": cfg.seed,
                              "evaluated_on": data.evaluated_on}

    def say(msg: str) -> None:
        if progress:
            print(f"[eval {cfg.method}/{cfg.data.name}] {msg}", flush=True)

    t0 = time.time()
    if "nmi" in what:
        result.update(evaluate_clustering(method, data))
        say(f"nmi {result['nmi']:.4f} acc {result['acc']:.4f}")
    if "probe" in what:
        result.update(linear_probe(method, data.train_x, data.train_y, data.test_x, data.test_y, seed=cfg.seed))
        say(f"linear probe test acc {result['probe_test_acc']:.4f}")
    if "ood" in what:
        for name in ood_datasets:
            other_x, split = ood_images(name, cfg.data, cfg.seed, ood_root)
            if tuple(other_x.shape[1:]) != tuple(data.input_shape):
                raise GediError(f"--ood-dataset {name}: images of shape {tuple(other_x.shape[1:])} do not match the "
                                f"run's {tuple(data.input_shape)}")
            for score in ("grad_norm", "logp"):
                result[f"ood_auroc_{score}_{name}"] = ood_auroc(method, data.test_x, other_x, score=score)
            if split != data.evaluated_on:
                result[f"ood_split_{name}"] = split
            say(f"OOD AUROC vs {name}: {result[f'ood_auroc_grad_norm_{name}']:.4f} (-||dE/dx||), "
                f"{result[f'ood_auroc_logp_{name}']:.4f} (-E)")
    if "fid" in what:
        n = min(fid_samples, len(data.test_x))
        fake = sample_images(method, n=n, steps=fid_steps, seed=cfg.seed)
        result["fid"] = fid_score(data.test_x[:n], fake, features=fid_features, device=device,
                                   metric=fid_metric)
        if method.replay_buffer() is not None:
            fake = sample_images(method, n=n, steps=fid_steps, seed=cfg.seed, from_buffer=True)
            result["fid_buffer"] = fid_score(data.test_x[:n], fake, features=fid_features, device=device,
                                              metric=fid_metric)
        result["fid_samples"], result["fid_steps"] = n, fid_steps
        result["fid_features"] = fid_features or "inception"
        say(f"FID {result['fid']:.2f} ({n} samples, {fid_steps} SGLD steps)"
            + (f", from the replay buffer {result['fid_buffer']:.2f}" if "fid_buffer" in result else ""))
    if "samples" in what:
        save_samples(method, out_dir / "samples.png", n=100, steps=fid_steps, seed=cfg.seed)
        result["samples_png"] = str(out_dir / "samples.png")
        if method.replay_buffer() is not None:
            save_samples(method, out_dir / "samples_buffer.png", n=100, steps=fid_steps, seed=cfg.seed,
                         from_buffer=True)
            result["samples_buffer_png"] = str(out_dir / "samples_buffer.png")
        say(f"samples -> {out_dir / 'samples.png'}")
    result["eval_seconds"] = round(time.time() - t0, 2)
    write_json(out_dir / "eval.json", {**previous_eval(out_dir), **result})
    return result
