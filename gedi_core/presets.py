"""A run's config from its layers: data-set defaults < method defaults < files, flags, overrides.

Used by the command line, the experiment scripts and the Python API alike, so that every way
of starting a run resolves the same config (the projector of an image model follows its final
ResNet width F: hidden 2F, output F, unless a layer sets it)."""

from __future__ import annotations

from typing import Any, Mapping

from gedi_core.config import TrainConfig, build_config, merge

Layer = tuple[str, Mapping[str, Any]]


def resolve_config(layers: list[Layer]) -> TrainConfig:
    """The validated :class:`TrainConfig` of ``layers`` (later ones win) below which the
    defaults of the method and of the data set they name are put."""
    from gedi_core.data.vision import DATASET_DEFAULTS
    from gedi_core.methods import get_spec

    merged: dict[str, Any] = {}
    for _, layer in layers:
        merged = merge(merged, layer)
    method = merged.get("method", TrainConfig.method)
    dataset = str(merged.get("data", {}).get("name", TrainConfig().data.name))
    below: list[Layer] = [(f"defaults of method '{method}'", get_spec(method).defaults)]
    defaults = DATASET_DEFAULTS.get(dataset)
    if defaults is not None:
        width = build_config(TrainConfig, [("d", defaults), *below, *layers]).model.width
        model = {**defaults.get("model", {}), "width": width, "proj_hidden": 2 * width, "proj_dim": width}
        below.insert(0, (f"defaults of dataset '{dataset}'", {**defaults, "model": model}))
    return build_config(TrainConfig, [*below, *layers]).validate()


def vision_config(dataset: str, method: str = "gedi", **overrides: Any) -> TrainConfig:
    """The config of ``method`` on image data set ``dataset`` with nested ``overrides``."""
    return resolve_config([("overrides", {**overrides, "method": method,
                                          "data": {**overrides.get("data", {}), "name": dataset}})])
