"""ProbLog programs with neural predicates: parse and check them, and build the DeepProbLog Model.

Every check (parse errors with file and line, network names, domain sizes) runs here, before
any data is loaded or any query is compiled."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from gedi_core.errors import GediError

@dataclass
class NeuralPredicate:
    network: str
    predicate: str
    arity: int
    domain: list
    line: int


@dataclass
class ProgramInfo:
    path: str
    neural: list[NeuralPredicate]
    predicates: set[tuple[str, int]]


def _heads(stmt) -> list:
    from problog.logic import AnnotatedDisjunction, Clause, Or, Term

    if isinstance(stmt, AnnotatedDisjunction):
        return list(stmt.heads)
    if isinstance(stmt, Clause):
        return [stmt.head]
    if isinstance(stmt, Or):
        return list(stmt.to_list())
    if isinstance(stmt, Term):
        return [stmt]
    return []


def inspect_program(path: str | Path) -> ProgramInfo:
    """Parse a program; return its neural predicates and defined predicates.

    A parse error becomes a :class:`GediError` naming the file and line."""
    from problog.errors import ProbLogError
    from problog.program import PrologFile

    from gedi_core.config import read_text_file

    path = Path(path)
    if not path.is_file():
        raise GediError(f"program {path}: no such file")
    read_text_file(path, "ProbLog program (.pl)")
    try:
        program = PrologFile(str(path))
        statements = list(program)
    except ProbLogError as exc:
        loc = getattr(exc, "location", None)
        line = f":{loc[1]}" if isinstance(loc, tuple) and len(loc) > 1 and loc[1] is not None else ""
        msg = str(exc).split(" at ")[0] if line else str(exc)
        raise GediError(f"{path}{line}: cannot parse program: {msg}") from None

    def line_of(stmt) -> int:
        try:
            return int(program.lineno(stmt.location)[1])
        except Exception:  # noqa: BLE001 - location is best effort
            return 0

    return program_info(statements, str(path), line_of)


def model_program(model) -> ProgramInfo:
    """The :class:`ProgramInfo` of the program a DeepProbLog ``Model`` holds."""
    return program_info(list(model.program), "the model's program", lambda stmt: 0)


def program_info(statements: Sequence, path: str, line_of: Callable[[object], int]) -> ProgramInfo:
    """Neural predicates and defined predicates of parsed ProbLog ``statements``."""
    from problog.logic import Term, term2list

    neural: list[NeuralPredicate] = []
    predicates: set[tuple[str, int]] = set()
    for stmt in statements:
        for head in _heads(stmt):
            if not isinstance(head, Term) or head.functor in (":-", "_directive"):
                continue
            predicates.add((str(head.functor), head.arity))
            p = head.probability
            if isinstance(p, Term) and p.functor == "nn":
                line = line_of(stmt)
                if p.arity != 4:
                    raise GediError(f"{path}:{line}: nn/{p.arity} in {head.functor}/{head.arity}: gedi_nesy supports "
                                    "nn(Net, Inputs, Output, Domain) :: pred(...)")
                try:
                    domain = term2list(p.args[3], False)
                except Exception:  # noqa: BLE001
                    raise GediError(f"{path}:{line}: the domain of nn({p.args[0]}, ...) must be a list") from None
                neural.append(NeuralPredicate(str(p.args[0]), str(head.functor), head.arity, domain, line))
    return ProgramInfo(path, neural, predicates)


def check_program(info: ProgramInfo, networks: Sequence) -> None:
    """Every ``nn`` predicate names a registered network whose output size is the domain's."""
    by_name = {net.name: net for net in networks}
    if not info.neural:
        raise GediError(f"{info.path}: the program declares no neural predicate nn(...)")
    for npred in info.neural:
        if npred.network not in by_name:
            raise GediError(f"{info.path}:{npred.line}: neural predicate {npred.predicate}/{npred.arity} uses network "
                            f"'{npred.network}', which is not registered (registered: {', '.join(by_name) or 'none'})")
        module = by_name[npred.network].network_module
        k = getattr(module, "num_clusters", None)
        if k is not None and len(npred.domain) < 2:
            raise GediError(f"{info.path}:{npred.line}: neural predicate {npred.predicate}/{npred.arity} has a "
                            f"domain of {len(npred.domain)} value(s); a GEDI network clusters into >= 2 values, "
                            "so its domain needs >= 2 values")
        if k is not None and k != len(npred.domain):
            raise GediError(f"{info.path}:{npred.line}: neural predicate {npred.predicate}/{npred.arity} has a domain of "
                            f"{len(npred.domain)} values but network '{npred.network}' has {k} clusters "
                            f"(set --num-clusters {len(npred.domain)})")


def network_domains(info: ProgramInfo) -> dict[str, list]:
    """The (first) domain of each network in the program."""
    out: dict[str, list] = {}
    for npred in info.neural:
        out.setdefault(npred.network, npred.domain)
    return out


def build_nesy_model(program: str | Path, networks: Sequence, pools=None, cache: bool = True,
                     engine: str = "batched", compile_cache: str | Path | None = None):
    """A DeepProbLog ``Model`` of ``program`` with ``networks``, its inference engine and the
    pools as tensor sources ``train`` and ``test`` (``val`` instead of ``test`` for pools with a
    validation split).

    ``engine``: ``batched`` (gedi_nesy.engine: each query shape compiled once to an SDD by
    DeepProbLog, evaluated as a tensorised circuit for the whole batch) or ``exact``
    (DeepProbLog's ``ExactEngine``, circuits cached per query shape).  ``compile_cache``: a
    folder where the batched engine keeps compiled shapes across runs.  A program that reads the
    fixed network ``sum_digit`` (programs/long_addition.pl) gets it and its tensor source added
    (:mod:`gedi_nesy.long_addition`).

    All checks (parse, network names, domain sizes) run here, before any training."""
    from deepproblog.model import Model

    from gedi_nesy.pools import ImagePool
    from gedi_nesy.engine import set_engine
    from gedi_nesy.long_addition import SUM_DIGIT, SumDigits, sum_digit_network, uses_sum_digits

    info = inspect_program(program)
    networks = list(networks)
    fixed = uses_sum_digits(info) and all(net.name != SUM_DIGIT for net in networks)
    if fixed:  # programs/long_addition.pl: the sum's digits are read through a fixed network
        networks.append(sum_digit_network())
    check_program(info, networks)
    model = Model(str(program), networks)
    set_engine(model, engine, cache=cache, disk_cache=compile_cache)
    if fixed:
        model.add_tensor_source(SUM_DIGIT, SumDigits())
    if pools is not None:  # train and test, or train and val (validation split: no test pool)
        for source, images in pools.sources().items():
            model.add_tensor_source(source, ImagePool(images, source))
    return model


#: program constructs the gedi-nesy CLI cannot honour yet: (functor, why)
UNSUPPORTED = {"evidence": "training does not condition on evidence yet, so the program would mean something "
                           "else than what is trained; remove it (or state it in the queries)"}


def check_supported(path: str | Path) -> None:
    """Refuse a program using a construct of :data:`UNSUPPORTED` (e.g. ``evidence(...)``), naming
    the file and line; the CLI calls it before any data is loaded."""
    from problog.program import PrologFile

    program = PrologFile(str(path))
    for stmt in program:
        functor = getattr(stmt, "functor", None)
        if functor in UNSUPPORTED:
            try:
                line = f":{int(program.lineno(stmt.location)[1])}"
            except Exception:  # noqa: BLE001 - location is best effort
                line = ""
            raise GediError(f"{path}{line}: {functor}(...) is not supported: {UNSUPPORTED[functor]}")
