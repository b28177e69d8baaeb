"""The NeSy data, by one name: image pools (:mod:`gedi_nesy.pools`), the image sets behind them
(:mod:`gedi_nesy.image_sets`), queries and tasks (:mod:`gedi_nesy.tasks`) and query files
(:mod:`gedi_nesy.query_file`). This module only re-exports their names, for code that imports
them from ``gedi_nesy.data``.
"""

from gedi_nesy.image_sets import (PIXEL_RULE, embedded_digits, load_pools, mnist, npz_image_array, npz_images,
                                  open_npz)
from gedi_nesy.pools import DIGITS, ImagePool, Pools, carve_validation, check_labels
from gedi_nesy.query_file import has_proof, parse_query_file, read_query_file
from gedi_nesy.tasks import (ADDITION_PAIRS, PLACEHOLDER, PROGRAM_TASKS, TASK_PREDICATES, abstract_query,
                             example_query, image_rounds, image_term, resolve_task, task_examples, task_options,
                             task_queries)

__all__ = ["ADDITION_PAIRS", "DIGITS", "PIXEL_RULE", "PLACEHOLDER", "PROGRAM_TASKS", "TASK_PREDICATES", "ImagePool",
           "Pools", "abstract_query", "carve_validation", "check_labels", "embedded_digits", "example_query",
           "has_proof", "image_rounds", "image_term", "load_pools", "mnist", "npz_image_array", "npz_images",
           "open_npz", "parse_query_file", "read_query_file", "resolve_task", "task_examples", "task_options",
           "task_queries"]
