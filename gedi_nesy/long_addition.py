"""Long multi-digit addition (programs/long_addition.pl): the sum's digits as circuit inputs.

A query names the N + 1 digits of its sum as terms ``tensor(sum_digit(K, V))`` ("digit V at
position K", K = 0 for the most significant).  The program reads them through the fixed network
``sum_digit`` (:func:`sum_digit_network`: probability 1 for V, 0 for every other digit) and the
tensor source ``sum_digit`` (:class:`SumDigits`).  Since they are ``tensor(...)`` terms, the
query's abstract form (:func:`gedi_nesy.tasks.abstract_query`) is the same for every sum: one
compiled circuit per N serves every label.  The position K only keeps the terms of one query
distinct (two equal terms would share one placeholder and change the query's shape).

:func:`sum_accuracy` scores test queries the way the benchmark does: the sum of the numbers read
off the networks' most likely digits, against the label.
"""

from __future__ import annotations

from typing import Sequence

import torch
from problog.logic import Constant, Term, term2list
from torch import Tensor, nn

from gedi_core.errors import GediError

SUM_DIGIT = "sum_digit"  # the fixed network and the tensor source of the sum's digits
DIGIT_VALUES = 10


class OneHotDigit(nn.Module):
    """The fixed ``sum_digit`` network: its input is already the one-hot digit (no parameters)."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class SumDigits:
    """Tensor source ``sum_digit``: ``tensor(sum_digit(K, V))`` -> the one-hot vector of digit V."""

    def __init__(self) -> None:
        self._eye = torch.eye(DIGIT_VALUES)

    def __getitem__(self, key: tuple) -> Tensor:
        if len(key) != 2:
            raise GediError(f"tensor({SUM_DIGIT}(...)) takes a position and a digit, got {len(key)} argument(s)")
        value = key[1]
        v = int(value.value) if isinstance(value, Constant) else int(value)
        if not 0 <= v < DIGIT_VALUES:
            raise GediError(f"tensor({SUM_DIGIT}(K, V)): V must be a digit 0..9, got {v}")
        return self._eye[v]


def sum_digit_network():
    """The DeepProbLog ``Network`` ``sum_digit`` (fixed, no parameters, no optimizer step)."""
    from deepproblog.network import Network

    return Network(OneHotDigit(), SUM_DIGIT, batching=True)


def uses_sum_digits(program_info) -> bool:
    """True when the program (a :class:`gedi_nesy.program.ProgramInfo`) reads the fixed network
    ``sum_digit``: its queries give the sum as digits (:func:`sum_terms`)."""
    return any(npred.network == SUM_DIGIT for npred in program_info.neural)


def sum_terms(total: int, digits: int) -> list[Term]:
    """The ``digits + 1`` terms ``tensor(sum_digit(K, V))`` of ``total``, most significant first."""
    if not 0 <= total < 2 * 10**digits:
        raise GediError(f"the sum {total} of two {digits}-digit numbers must lie in 0..{2 * 10**digits - 2}")
    text = str(total).rjust(digits + 1, "0")
    return [Term("tensor", Term(SUM_DIGIT, Constant(k), Constant(int(c)))) for k, c in enumerate(text)]


def number(digits: Sequence[int]) -> int:
    """The number written by ``digits``, most significant first."""
    value = 0
    for d in digits:
        value = 10 * value + int(d)
    return value


def query_numbers(q) -> tuple[list[Term], list[Term], int]:
    """The image terms of the two numbers of a ``multi_addition`` query (either form: the sum as a
    constant or as ``sum_digit`` terms) and its sum."""
    term = q.query.apply_term(q.substitution)
    xs, ys, label = term2list(term.args[0], False), term2list(term.args[1], False), term.args[2]
    if isinstance(label, Constant):
        return xs, ys, int(label.value)
    return xs, ys, number(int(t.args[0].args[1].value) for t in term2list(label, False))


@torch.no_grad()
def sum_accuracy(model, queries: Sequence, network: str = "gedi_net", batch_size: int = 512) -> float:
    """Share of ``multi_addition`` queries whose sum equals the sum of the two numbers read off
    ``network``'s most likely digit for each image (what a perfect reasoner over the network gets)."""
    if not queries:
        return float("nan")
    module = model.networks[network].network_module
    parsed = [query_numbers(q) for q in queries]
    images = list(dict.fromkeys(t for xs, ys, _ in parsed for t in xs + ys))
    device = next(module.parameters(), torch.zeros(0)).device
    was_training = module.training
    module.eval()
    try:
        digit = {}
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            x = torch.stack([model.get_tensor(t) for t in chunk]).to(device)
            for t, d in zip(chunk, module(x).argmax(-1).tolist()):
                digit[t] = d
    finally:
        module.train(was_training)
    right = sum(number(digit[t] for t in xs) + number(digit[t] for t in ys) == total for xs, ys, total in parsed)
    return right / len(parsed)
