"""Query files: one ground ProbLog query per line, ``q.`` or ``P::q.``.

Their syntax (:func:`parse_query_file`) is checked by :meth:`gedi_nesy.config.NesyConfig.validate`
before any image is loaded; :func:`read_query_file` then checks the queries against the pools and
the program and turns them into DeepProbLog queries. Importing this module costs no torch.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Callable, Iterable, Sequence

from problog.logic import Constant, Term

from gedi_core.config import read_text_file
from gedi_core.errors import GediError


def parse_query_file(path: str | Path, flag: str = "--queries", ground: bool = True) -> list[tuple[int, Term, float]]:
    """``(line, query, P)`` for each query of a query file: ``q.`` or ``P::q.`` with
    ``0 <= P <= 1``, one per line; blank lines and ``%`` comments are skipped.  Checks what
    needs neither the program nor the images (UTF-8 text, syntax, groundness unless ``ground``
    is False, P); errors name the file and line.  Cached while the file is unchanged, so an early
    check costs nothing later."""
    path = Path(path)
    if not path.is_file():
        raise GediError(f"{flag} {path}: no such file")
    stat = path.stat()
    return list(_parse_query_file(str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(path), ground))


@functools.lru_cache(maxsize=4)
def _parse_query_file(resolved: str, mtime_ns: int, size: int, shown: str,
                      ground: bool = True) -> tuple[tuple[int, Term, float], ...]:
    from problog.errors import ProbLogError
    from problog.parser import PrologParser
    from problog.program import ExtendedPrologFactory

    parser = PrologParser(ExtendedPrologFactory())
    out = []
    for lineno, line in enumerate(read_text_file(resolved, "query file (one ground query per line)").splitlines(), 1):
        text = line.split("%", 1)[0].strip()
        if not text:
            continue
        if not text.endswith("."):
            text += "."
        try:
            terms = list(parser.parseString(text))
        except ProbLogError as exc:
            raise GediError(f"{shown}:{lineno}: cannot parse query: {exc}") from None
        if len(terms) != 1 or not isinstance(terms[0], Term) or terms[0].functor in (":-", "<-"):
            raise GediError(f"{shown}:{lineno}: expected one ground query per line, got '{line.strip()}'")
        p = _query_probability(terms[0], f"{shown}:{lineno}")
        term = terms[0].with_probability(None)
        if ground and not term.is_ground():
            raise GediError(f"{shown}:{lineno}: query '{term}' is not ground")
        out.append((lineno, term, p))
    if not out:
        raise GediError(f"{shown}: no queries")
    return tuple(out)


def _query_probability(term: Term, where: str) -> float:
    """The ``P`` of ``P::q`` (1 without one): a number in [0, 1]."""
    if term.probability is None:
        return 1.0
    try:
        p = float(term.probability)
    except Exception:  # noqa: BLE001 - ProbLog raises several kinds for a non-numeric term
        raise GediError(f"{where}: the probability {term.probability} of a query must be a number in [0, 1]") from None
    if not (math.isfinite(p) and 0.0 <= p <= 1.0):
        raise GediError(f"{where}: the probability of a query must lie in [0, 1], got {p:g}")
    return p


def read_query_file(
    path: str | Path,
    sizes: dict[str, int],
    known: Iterable[tuple[str, int]] | None = None,
    provable: Callable[[object], bool] | None = None,
    ground: bool = True,
    held_out: Sequence[str] = (),
) -> list:
    """The queries of a query file (syntax: :func:`gedi_nesy.query_file.parse_query_file`) as
    DeepProbLog queries.

    Each ``tensor(S(I))`` must name a pool ``S`` in ``sizes`` with ``0 <= I < sizes[S]``; with
    ``known`` (the program's predicates as (name, arity)), an unknown predicate is an error;
    with ``provable`` (see :func:`has_proof`), so is a query the program cannot prove whatever
    the networks say (e.g. a label outside what the program can produce); a query over an image
    of a ``held_out`` pool (training queries: ``test``, ``val``) is refused, as training on the
    images the run is evaluated on would report a meaningless accuracy. Errors name the file and
    line."""
    from problog.errors import ProbLogError

    from gedi_nesy.tasks import abstract_query

    known_set = set(known) if known is not None else None
    queries = []
    for lineno, term, p in parse_query_file(path, ground=ground):
        if known_set is not None and (term.functor, term.arity) not in known_set:
            raise GediError(f"{path}:{lineno}: query names unknown predicate {term.functor}/{term.arity} "
                            f"(the program defines: {', '.join(sorted(f'{n}/{a}' for n, a in known_set))})")
        q = abstract_query(term, p)
        for t in q.substitution.values():
            src = t.args[0]
            if not (isinstance(src, Term) and src.arity == 1 and isinstance(src.args[0], Constant)
                    and isinstance(src.args[0].value, int)):
                raise GediError(f"{path}:{lineno}: image term {t} must be tensor(POOL(I)), e.g. tensor(train(I)) "
                                "or tensor(test(I))")
            name, idx = str(src.functor), int(src.args[0].value)
            if name not in sizes:
                raise GediError(f"{path}:{lineno}: image term {t} names unknown pool '{name}' (known: {', '.join(sizes)})")
            if not 0 <= idx < sizes[name]:
                raise GediError(f"{path}:{lineno}: image index {idx} in {t} out of range "
                                f"({name} has {sizes[name]} images)")
            if name in held_out:
                raise GediError(f"{path}:{lineno}: training query uses {t}, an image of the {name} pool: the run "
                                f"would train on the images it reports accuracy on; use tensor(train(I))")
        try:
            proved = provable is None or provable(q)
        except ProbLogError as exc:
            raise GediError(f"{path}:{lineno}: cannot ground query '{term}': {exc}") from None
        if not proved:
            raise GediError(f"{path}:{lineno}: the program cannot prove '{term}' whatever its networks answer "
                            "(is the label outside what the program can produce?)")
        queries.append(q)
    return queries


def has_proof(model) -> Callable[[object], bool]:
    """For :func:`read_query_file`'s ``provable``: whether the program of ``model`` (a DeepProbLog
    ``Model``, either engine) proves query ``q`` for some network output.  Compiles ``q``'s shape
    (the work training needs anyway): read off the batched engine's compiled shape, else off
    DeepProbLog's circuit cache."""

    from gedi_nesy.engine import is_batched

    def provable(q) -> bool:
        if is_batched(model):  # the compiled shape says it (a planned one has no SDD)
            shape = model.solver.shape(q)
            if shape.fallback is None:
                return not shape.answers or any(c is None or c > -math.inf for c in shape.answer_const)
        sdd = model.solver.cache.get(q).sdd
        nodes = [node for _, node in sdd.queries()]
        return not nodes or any(node is not None and node != sdd.FALSE for node in nodes)

    return provable
