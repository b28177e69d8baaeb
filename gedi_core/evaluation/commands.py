"""``gedi-core eval``: every evaluation of a run folder, written to ``eval.json``."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

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


def checked_evaluations(what: Iterable[str]) -> list[str]:
    """The names in ``what`` (``--what``), each one of :data:`KNOWN`."""
    what = [w.strip() for w in what if w.strip()]
    for w in what:
        if w not in KNOWN:
            raise GediError(f"--what: unknown evaluation '{w}' (known: {', '.join(KNOWN)})")
    return what


def output_folder(run: str | Path, out: str | Path | None, what: Sequence[str]) -> Path:
    """The folder ``eval.json`` (and the sample grids) go to, checked before any work: what an
    earlier evaluation recorded there is this command's own to replace."""
    out_dir = Path(out if out is not None else run)
    previous = previous_eval(out_dir)
    owned = ("eval.json", *(Path(previous[k]).name for k in SAMPLE_KEYS if isinstance(previous.get(k), str)))
    pngs = ("samples.png", "samples_buffer.png") if "samples" in what else ()
    return check_output_folder(out_dir, ("eval.json", *pngs), owned=owned)


@dataclass
class LoadedRun:
    """A run folder under evaluation: its method, data and config; ``say`` reports progress."""

    method: Any
    data: Any
    cfg: Any
    progress: bool = True

    def say(self, msg: str) -> None:
        if self.progress:
            print(f"[eval {self.cfg.method}/{self.cfg.data.name}] {msg}", flush=True)


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
    from gedi_core.evaluation import linear_probe, load_run
    from gedi_core.evaluation.clusters import evaluate_clustering

    what = checked_evaluations(what)
    out_dir = output_folder(run, out, what)
    r = LoadedRun(*load_run(run, device=device, data_overrides=data_overrides), progress=progress)
    method, data, cfg = r.method, r.data, r.cfg
    fid_metric = None
    if "fid" in what:  # fail fast, before the other evaluations, when FID cannot run
        from gedi_core.evaluation.fid import make_fid_metric

        fid_metric = make_fid_metric(fid_features, tuple(data.input_shape[-2:]))
    out_dir.mkdir(exist_ok=True)
    result: dict[str, Any] = {"run": str(run), "method": cfg.method, "dataset": cfg.data.name, "seed": cfg.seed,
                              "evaluated_on": data.evaluated_on}
    t0 = time.time()
    if "nmi" in what:
        result.update(evaluate_clustering(method, data))
        r.say(f"nmi {result['nmi']:.4f} acc {result['acc']:.4f}")
    if "probe" in what:
        result.update(linear_probe(method, data.train_x, data.train_y, data.test_x, data.test_y, seed=cfg.seed))
        r.say(f"linear probe test acc {result['probe_test_acc']:.4f}")
    if "ood" in what:
        for name in ood_datasets:
            result.update(evaluate_ood(r, name, ood_root))
    if "fid" in what:
        result.update(evaluate_fid(r, fid_samples, fid_steps, fid_features, device, fid_metric))
    if "samples" in what:
        result.update(write_sample_grids(r, out_dir, fid_steps))
    result["eval_seconds"] = round(time.time() - t0, 2)
    write_json(out_dir / "eval.json", {**previous_eval(out_dir), **result})
    return result


def evaluate_ood(r: LoadedRun, name: str, ood_root: str | None) -> dict[str, Any]:
    """The OOD AUROCs of the run's test split against image set ``name`` (and the split of
    ``name`` used, when it is not the run's)."""
    from gedi_core.evaluation import ood_auroc
    from gedi_core.evaluation.ood import ood_images

    other_x, split = ood_images(name, r.cfg.data, r.cfg.seed, ood_root)
    if tuple(other_x.shape[1:]) != tuple(r.data.input_shape):
        raise GediError(f"--ood-dataset {name}: images of shape {tuple(other_x.shape[1:])} do not match the "
                        f"run's {tuple(r.data.input_shape)}")
    found: dict[str, Any] = {}
    for score in ("grad_norm", "logp"):
        found[f"ood_auroc_{score}_{name}"] = ood_auroc(r.method, r.data.test_x, other_x, score=score)
    if split != r.data.evaluated_on:
        found[f"ood_split_{name}"] = split
    r.say(f"OOD AUROC vs {name}: {found[f'ood_auroc_grad_norm_{name}']:.4f} (-||dE/dx||), "
          f"{found[f'ood_auroc_logp_{name}']:.4f} (-E)")
    return found


def evaluate_fid(r: LoadedRun, fid_samples: int, fid_steps: int, fid_features: str | None, device: str,
                 fid_metric: Any) -> dict[str, Any]:
    """FID of SGLD samples from noise (and from the replay buffer, where there is one) against
    as many test images."""
    from gedi_core.evaluation import fid_score, sample_images

    method, test_x, seed = r.method, r.data.test_x, r.cfg.seed
    n = min(fid_samples, len(test_x))
    fake = sample_images(method, n=n, steps=fid_steps, seed=seed)
    found: dict[str, Any] = {"fid": fid_score(test_x[:n], fake, features=fid_features, device=device,
                                              metric=fid_metric)}
    if method.replay_buffer() is not None:
        fake = sample_images(method, n=n, steps=fid_steps, seed=seed, from_buffer=True)
        found["fid_buffer"] = fid_score(test_x[:n], fake, features=fid_features, device=device, metric=fid_metric)
    found["fid_samples"], found["fid_steps"] = n, fid_steps
    found["fid_features"] = fid_features or "inception"
    r.say(f"FID {found['fid']:.2f} ({n} samples, {fid_steps} SGLD steps)"
          + (f", from the replay buffer {found['fid_buffer']:.2f}" if "fid_buffer" in found else ""))
    return found


def write_sample_grids(r: LoadedRun, out_dir: Path, fid_steps: int) -> dict[str, Any]:
    """``samples.png`` (and ``samples_buffer.png`` from the replay buffer, where there is one):
    10x10 grids of SGLD samples; returns where they were written."""
    from gedi_core.evaluation import save_samples

    found = {"samples_png": str(out_dir / "samples.png")}
    save_samples(r.method, out_dir / "samples.png", n=100, steps=fid_steps, seed=r.cfg.seed)
    if r.method.replay_buffer() is not None:
        save_samples(r.method, out_dir / "samples_buffer.png", n=100, steps=fid_steps, seed=r.cfg.seed,
                     from_buffer=True)
        found["samples_buffer_png"] = str(out_dir / "samples_buffer.png")
    r.say(f"samples -> {out_dir / 'samples.png'}")
    return found
