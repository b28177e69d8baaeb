"""Queries and tasks: DeepProbLog queries over pool images, and the examples of the digit tasks
(``addition``, ``sum``, ``multi_addition``) generated from a pool's labels.

Queries are built with placeholders for their images (``addition(gedi_img0, gedi_img1,
gedi_img2)`` plus a substitution), so that DeepProbLog's exact engine compiles one circuit per
query shape and reuses it (``cache=True``).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from problog.logic import Constant, Term
from torch import Tensor

from gedi_core.errors import GediError
from gedi_nesy.long_addition import number, sum_terms
from gedi_nesy.pools import DIGITS, check_labels

PLACEHOLDER = "gedi_img{}"


def image_term(source: str, index: int) -> Term:
    return Term("tensor", Term(source, Constant(int(index))))


def abstract_query(term: Term, p: float = 1.0):
    """A ground query with its ``tensor(...)`` arguments replaced by placeholders, plus the
    substitution that restores them: queries of one shape then share one compiled circuit.
    A tensor that occurs several times gets one placeholder (it is one image, one atom)."""
    from deepproblog.query import Query

    subs: dict[Term, Term] = {}
    seen: dict[Term, Term] = {}

    def walk(t):
        if isinstance(t, Term) and t.functor == "tensor" and t.arity == 1:
            if t not in seen:
                seen[t] = Term(PLACEHOLDER.format(len(subs)))
                subs[seen[t]] = t
            return seen[t]
        if isinstance(t, Term) and t.arity > 0:
            return t.with_args(*(walk(a) for a in t.args))
        return t

    return Query(walk(term).with_probability(None), subs, p=p)


ADDITION_PAIRS = [(a, b) for a in range(10) for b in range(10) if a + b <= 9]


def _digits(task: str, rng: random.Random) -> tuple[list[int], int | None]:
    if task == "addition":  # paper appendix O: (a, b) uniform with a + b <= 9, images of a, b, a + b
        a, b = rng.choice(ADDITION_PAIRS)
        return [a, b, a + b], None
    if task == "sum":
        a, b = rng.randrange(10), rng.randrange(10)
        return [a, b], a + b
    raise GediError(f"unknown task '{task}' (known: addition, sum, multi_addition)")


TASK_PREDICATES = {"addition": ("addition", 3), "sum": ("sum", 3), "multi_addition": ("multi_addition", 3)}
PROGRAM_TASKS = {"long_addition": "multi_addition"}  # --task auto: program file stem -> task


def task_examples(task: str, labels: Tensor, n: int, seed: int, strict: bool = True,
                  digits: int = 2) -> list[tuple[list[int], int | None]]:
    """``n`` examples of ``task``: image indices with the digits it needs and the label of the
    query (None for the three-image form).

    ``addition`` and ``sum``: the digits are drawn first, then images of them without replacement
    from the pool; when the pool runs out of a digit, an error if ``strict``, else the examples so
    far.  ``multi_addition`` (two numbers of ``digits`` digits each): the images are drawn as
    DeepProbLog's ``MNISTOperator`` draws them, a permutation of the pool cut into queries
    (:func:`image_rounds`, never running out), and the label is the sum of the two numbers."""
    check_labels(labels, f"{task} examples")
    if digits < 1:
        raise GediError(f"data.digits must be at least 1, got {digits}")
    rng = random.Random(seed)
    if task == "multi_addition":
        values = labels.tolist()
        examples = []
        for images in image_rounds(len(values), n, 2 * digits, rng):
            d = [values[i] for i in images]
            examples.append((images, number(d[:digits]) + number(d[digits:])))
        return examples
    by_class: dict[int, list[int]] = {c: [] for c in DIGITS}
    for i, y in enumerate(labels.tolist()):
        by_class[y].append(i)
    for idx in by_class.values():
        rng.shuffle(idx)
    examples = []
    for k in range(n):
        digits_k, label = _digits(task, rng)
        chosen = []
        for d in digits_k:
            if not by_class[d]:
                if not strict:
                    return examples
                raise GediError(f"{task}: the pool ({len(labels)} images) runs out of images of digit {d} "
                                f"at example {k + 1} of {n}; ask for fewer examples")
            chosen.append(by_class[d].pop())
        examples.append((chosen, label))
    return examples


def image_rounds(n_images: int, n: int, size: int, rng: random.Random) -> list[list[int]]:
    """``n`` queries of ``size`` distinct image indices out of ``n_images``, in rounds: each round
    is a fresh seeded permutation of the pool cut into ``n_images // size`` disjoint queries (the
    rest of the permutation unused).  The first round's queries use each image at most once; with
    more queries, later rounds reuse images (each image at most once per round, never twice in
    one query, so every query has the same shape)."""
    per_round = n_images // size
    if per_round == 0:
        raise GediError(f"a query needs {size} distinct images, but the pool has only {n_images}")
    queries: list[list[int]] = []
    while len(queries) < n:
        perm = list(range(n_images))
        rng.shuffle(perm)
        queries += [perm[k * size : (k + 1) * size] for k in range(min(per_round, n - len(queries)))]
    return queries


def example_query(task: str, images: Sequence[int], label: int | None, source: str, sum_digits: bool = False):
    """The DeepProbLog query of one example (see programs/*.pl for the predicates).

    ``multi_addition``: the first half of ``images`` is the first number, the second half the
    second (most significant first); the sum is the constant ``label``, or with ``sum_digits``
    its digits as ``tensor(sum_digit(K, V))`` terms (programs/long_addition.pl)."""
    from problog.logic import list2term

    terms = [image_term(source, i) for i in images]
    if task == "addition":
        term = Term("addition", *terms)
    elif task == "sum":
        term = Term("sum", terms[0], terms[1], Constant(label))
    elif task == "multi_addition":
        half = len(terms) // 2
        total = list2term(sum_terms(label, half)) if sum_digits else Constant(label)
        term = Term("multi_addition", list2term(terms[:half]), list2term(terms[half:]), total)
    else:
        raise GediError(f"unknown task '{task}'")
    return abstract_query(term)


def task_queries(task: str, labels: Tensor, n: int, seed: int, source: str = "train", strict: bool = True,
                 digits: int = 2, sum_digits: bool = False) -> list:
    """``n`` queries of ``task`` over the pool ``source`` whose labels are ``labels``
    (fewer, when ``strict`` is False and the pool runs out of a digit).  ``digits``: the numbers'
    length for ``multi_addition``; ``sum_digits``: its sum given digit by digit (for programs that
    read the fixed network ``sum_digit``, :func:`gedi_nesy.long_addition.uses_sum_digits`)."""
    return [example_query(task, imgs, label, source, sum_digits)
            for imgs, label in task_examples(task, labels, n, seed, strict, digits)]


def task_options(digits: int, program: str | Path) -> dict:
    """The keyword arguments of :func:`task_queries` for a run of ``program``: the numbers'
    length and whether the program reads the sum digit by digit."""
    from gedi_nesy.long_addition import uses_sum_digits
    from gedi_nesy.program import inspect_program

    return {"digits": digits, "sum_digits": uses_sum_digits(inspect_program(program))}


def resolve_task(task: str, program: str | Path) -> str:
    """``auto``: the task named by the program's file stem (addition, sum, multi_addition)."""
    if task != "auto":
        return task
    stem = Path(program).stem
    stem = PROGRAM_TASKS.get(stem, stem)
    if stem in TASK_PREDICATES:
        return stem
    raise GediError(f"{program}: cannot tell which examples to generate for this program; "
                    "pass --task addition|sum|multi_addition or --queries FILE")
