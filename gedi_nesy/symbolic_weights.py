"""The weights ProbLog gives a query shape's SDD variables, read symbolically (for
:mod:`gedi_nesy.circuits`): :class:`SymbolicSemiring` turns each into a small expression over
network outputs and DeepProbLog's learnable ``t(_)`` parameters (:data:`PARAMETERS`), and
:class:`Unbatchable` says why a weight (and so a shape) is left to DeepProbLog's ``Solver``."""

from __future__ import annotations

from problog.evaluator import Semiring as ProbLogSemiring
from problog.logic import Constant, Term

from gedi_core.errors import GediError

# the pseudo-network whose "outputs" are DeepProbLog's learnable t(_) parameters: leaf
# (PARAMETERS, Constant(i), 0) is model.parameters[i]
PARAMETERS = "<t>"


class Unbatchable(GediError):
    """A query shape whose circuit the KLay path does not evaluate (its reason in the message):
    the batched solver evaluates such queries as DeepProbLog's ``Solver`` does.  ``per_solve``:
    the circuit names tensors that grounding put in DeepProbLog's tensor store (cleared at
    each solve), so it is ground again for each solve."""

    def __init__(self, message: str, per_solve: bool = False) -> None:
        super().__init__(message)
        self.per_solve = per_solve


def mentions_network_tensor(term) -> bool:
    """True when ``term`` holds a ``tensor(nn(...))`` subterm: the output of a deterministic
    (nn/3) network, which DeepProbLog computes while grounding or evaluating."""
    stack = [term]
    while stack:
        t = stack.pop()
        if isinstance(t, Term):
            if t.functor == "tensor" and t.arity == 1 and isinstance(t.args[0], Term) and t.args[0].functor == "nn":
                return True
            stack.extend(t.args)
    return False


class SymbolicSemiring(ProbLogSemiring):
    """ProbLog semiring whose values are small expressions, used once per query shape to read
    the weight ProbLog gives each SDD variable (``extract_weights`` + constraint updates).

    Expressions: ``("c", float)`` constant, ``("nn", net, inputs, j)`` network output
    (``j = 0`` for an nn/2 fact; ``(PARAMETERS, Constant(i), 0)`` for the learnable
    ``t(_)`` parameter ``i``), ``("neg", e)`` = 1 - e, ``("comp", (e, ...))`` = 1 - sum e
    (annotated disjunction's "none" choice).  A weight the KLay path does not take raises
    :class:`Unbatchable`."""

    def one(self):
        return ("c", 1.0)

    def zero(self):
        return ("c", 0.0)

    def is_one(self, a):
        return a == ("c", 1.0)

    def is_zero(self, a):
        return a == ("c", 0.0)

    def plus(self, a, b):
        if a[0] == "c" and b[0] == "c":
            return ("c", a[1] + b[1])
        raise Unbatchable("a sum of network weights")

    def times(self, a, b):
        if a[0] == "c" and b[0] == "c":
            return ("c", a[1] * b[1])
        raise Unbatchable("a product of network weights")

    def negate(self, a):
        if a[0] == "c":
            return ("c", 1.0 - a[1])
        return ("neg", a)

    def value(self, a, key=None):
        if isinstance(a, (int, float)) and not isinstance(a, bool):
            return ("c", float(a))
        if type(a) is Constant:
            return ("c", float(a))
        if isinstance(a, Term):
            if a.functor == "nn" and a.arity in (2, 3):
                net = str(a.args[0])
                if mentions_network_tensor(a.args[1]):
                    # (DeepProbLog's evaluation runs the nn/3 network again: the cached circuit holds)
                    raise Unbatchable(f"network '{net}' on a deterministic network's output")
                return ("nn", net, a.args[1], int(a.args[2]) if a.arity == 3 else 0)
            if a.functor == "t" and a.arity == 1 and type(a.args[0]) is Constant:
                return ("nn", PARAMETERS, a.args[0], 0)
            if a.functor == "tensor":
                raise Unbatchable("tensor-valued probability", per_solve=True)
            try:
                return ("c", float(a.compute_value()))
            except Exception:  # noqa: BLE001
                raise Unbatchable(f"probability {a}") from None
        raise Unbatchable(f"probability {a!r}")

    def ad_complement(self, ws, key=None):
        if all(w[0] == "c" for w in ws):
            return ("c", 1.0 - sum(w[1] for w in ws))
        return ("comp", tuple(ws))

    def in_domain(self, a):
        return True

    def is_dsp(self):
        return True
