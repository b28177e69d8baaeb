"""Evaluation of trained runs: clustering, linear probe, OOD AUROC, FID and SGLD sample grids.

``load_run(folder)`` rebuilds a method from a run folder (``config.yaml`` + ``checkpoint.pt``);
the functions below take the method and tensors, so they also work on models trained elsewhere.
"""

from gedi_core.evaluation.fid import fid_score, load_feature_extractor
from gedi_core.evaluation.ood import ood_auroc, ood_scores
from gedi_core.evaluation.probe import extract_features, linear_probe
from gedi_core.evaluation.load import load_run
from gedi_core.evaluation.samples import sample_images, save_samples

__all__ = [
    "extract_features",
    "fid_score",
    "linear_probe",
    "load_feature_extractor",
    "load_run",
    "ood_auroc",
    "ood_scores",
    "sample_images",
    "save_samples",
]
