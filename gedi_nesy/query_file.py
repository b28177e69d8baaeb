"""The syntax of query files: one ground ProbLog query per line, ``q.`` or ``P::q.``.

Checked by :meth:`gedi_nesy.config.NesyConfig.validate` before any image is loaded;
:func:`gedi_nesy.data.read_query_file` then checks the queries against the pools and the program.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

from problog.logic import Term

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
