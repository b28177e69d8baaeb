"""Everything before training, as a library call: :func:`prepare` turns a checked
:class:`~gedi_nesy.config.NesyConfig` into image pools, a DeepProbLog model with its GEDI
networks, and training and test queries, with every input check made before any training.

The command line (``gedi-nesy train`` / ``eval``) and the experiment scripts call it; it imports
torch, ProbLog and DeepProbLog only when called.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from gedi_core.errors import GediError
from gedi_nesy.config import NesyConfig
from gedi_nesy.limits import DEFAULT_GROUND_TIMEOUT, grounding_limit

REPO_ROOT = Path(__file__).resolve().parents[1]


def resolve_path(path: str | None) -> str | None:
    """Relative paths that do not exist here are looked up in the repository (programs/...)."""
    if path is None or Path(path).exists() or not (REPO_ROOT / path).exists():
        return path
    return str(REPO_ROOT / path)


def prepare(cfg: NesyConfig, quiet: bool = False, ground_timeout: float = DEFAULT_GROUND_TIMEOUT):
    """Everything before training, with all input checks: pools, networks, model, queries
    (grounding one query may take at most ``ground_timeout`` seconds).  Returns
    ``(pools, model, train_queries, test_queries)``.

    Notes (the data used, where query_acc is measured) are printed only once every check passed,
    so that an error is the only line on stderr."""
    from gedi_core.rng import seed_everything
    from gedi_nesy.compile_cache import check_compile_cache
    from gedi_nesy.image_sets import load_pools
    from gedi_nesy.query_file import has_proof
    from gedi_nesy.network import gedi_network
    from gedi_nesy.program import build_nesy_model, check_supported, inspect_program

    cfg.program = resolve_path(cfg.program) or cfg.program
    known = inspect_program(cfg.program).predicates
    check_supported(cfg.program)
    if cfg.compile_cache is not None:
        check_compile_cache(cfg.compile_cache)
    seed_everything(cfg.seed)
    pools = load_pools(cfg.data, cfg.seed)
    networks = [gedi_network(name, cfg.model, pools.input_shape) for name in cfg.network_names()]
    for net in networks:
        net.network_module.to(cfg.device)
    model = build_nesy_model(cfg.program, networks, pools, engine=cfg.engine, compile_cache=cfg.compile_cache)
    provable = has_proof(model)
    notes = [f"data: {pools.note}"] if pools.note else []
    train_q, test_q, task = run_queries(cfg, pools, known, provable, notes)
    compile_queries(model, list(train_q) + list(test_q), cfg.program, task, provable, ground_timeout)
    if not quiet:
        for note in notes:
            print(f"gedi-nesy: {note}", file=sys.stderr)
    return pools, model, train_q, test_q


def run_queries(cfg: NesyConfig, pools, known: Any, provable: Callable, notes: list[str]):
    """``(train_queries, test_queries, task)``: read from the query files, or generated for the
    program's task (``task`` None when the training queries come from a file); a note is added
    to ``notes`` where query_acc is measured on the training queries."""
    from gedi_nesy.query_file import read_query_file
    from gedi_nesy.tasks import TASK_PREDICATES, resolve_task, task_options, task_queries

    sizes = pools.sizes()
    if cfg.data.queries is not None:
        train_q = read_query_file(cfg.data.queries, sizes, known, provable, held_out=("test", "val"))
        task = None
    else:
        task = resolve_task(cfg.data.task, cfg.program)
        pred = TASK_PREDICATES[task]
        if pred not in known:
            raise GediError(f"{cfg.program}: task '{task}' queries {pred[0]}/{pred[1]}, which the program does not define")
        if pools.train_y is None:
            raise GediError(f"{cfg.data.images}: generating '{task}' examples needs train_labels; "
                            "add them or pass --queries FILE")
        options = task_options(cfg.data.digits, cfg.program)
        train_q = task_queries(task, pools.train_y, cfg.data.examples, cfg.seed, "train", **options)
    if cfg.data.test_queries is not None:
        test_q = read_query_file(cfg.data.test_queries, sizes, known, provable)
    elif task is not None:  # on the validation pool with data.validation, else the test pool
        test_q = task_queries(task, pools.eval_y, cfg.data.test_examples, cfg.seed + 1000, pools.eval_source,
                              strict=False, **options)
    else:
        test_q = train_q  # only training queries were given: query_acc is measured on them
        notes.append("no --test-queries: query_acc is measured on the training queries")
    return train_q, test_q, task


def compile_queries(model, queries: list, program: str, task: str | None, provable: Callable,
                    ground_timeout: float) -> None:
    """Compile every query shape now, so that grounding errors surface before training: a query
    that cannot be ground (or takes over ``ground_timeout`` seconds), or a generated one the
    program cannot prove, is one line."""
    from problog.errors import ProbLogError

    from gedi_nesy.engine import is_batched

    compile = model.solver.shape if is_batched(model) else model.solver.cache.get
    for q in {q.query: q for q in queries}.values():
        with grounding_limit(ground_timeout, program, q.query):
            try:
                compile(q)
            except ProbLogError as exc:
                raise GediError(f"{program}: cannot ground query {q.query}: {exc}") from None
            if task is not None and not provable(q):
                raise GediError(f"{program}: the program cannot prove the generated query {q.query} "
                                f"for any output of the networks (does it define {task} as the task expects?)")
