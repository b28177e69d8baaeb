"""Run configuration: dataclasses, YAML/JSON loading, dotted overrides, validation.

A run's configuration is built in layers, later ones winning (:mod:`gedi_core.presets`):

1. the dataclass defaults (the paper's toy settings, appendix L / Table 7),
2. the data set's defaults (image sets: appendix M / Table 9),
3. the method's own defaults (e.g. JEM uses 10 SGLD steps),
4. a config file (``--config FILE``, YAML or JSON, nested sections),
5. command-line flags (``--lr``, ``--w-inv``, ``--set sgld.steps=5`` ...).

Every unknown key is an error that names the key and the file it came from.

The modules, one job each: :mod:`~gedi_core.config.schema` (the dataclasses),
:mod:`~gedi_core.config.fields` (fields with their flag, help, range and choices; the tables built
from them), :mod:`~gedi_core.config.checks` (ranges and value checks), :mod:`~gedi_core.config.build`
(layers merged, values coerced), :mod:`~gedi_core.config.files` (config files, ``--set``, text files).
"""

from gedi_core.config.build import build_config, dotted_to_nested, from_dict, merge, to_dict
from gedi_core.config.checks import (FLOAT32_MAX, LEARNING_RATE, NON_NEGATIVE, POSITIVE, PROBABILITY, SEED, Range,
                                     check_config, check_section, check_sgld_init)
from gedi_core.config.fields import Flag, check_choices, flags_of, ranges_of, section, setting
from gedi_core.config.files import parse_set, read_config_file, read_text_file
from gedi_core.config.schema import (MODEL_RANGES, SGLD_RANGES, TRAIN_RANGES, DataConfig, LossWeights, ModelConfig,
                                     SGLDConfig, TrainConfig, amp_setting, download_setting,
                                     loss_weight)

__all__ = [
    "FLOAT32_MAX", "LEARNING_RATE", "MODEL_RANGES", "NON_NEGATIVE", "POSITIVE", "PROBABILITY", "SEED", "SGLD_RANGES",
    "TRAIN_RANGES", "DataConfig", "Flag", "LossWeights", "ModelConfig", "Range", "SGLDConfig", "TrainConfig",
    "amp_setting", "build_config", "download_setting", "check_choices", "check_config", "check_section", "check_sgld_init", "dotted_to_nested",
    "flags_of", "from_dict", "loss_weight", "merge", "parse_set", "ranges_of", "read_config_file", "read_text_file",
    "section", "setting", "to_dict",
]
