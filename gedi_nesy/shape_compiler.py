"""Compiling a batched solver's query shapes: each shape once, kept in memory and on disk.

:class:`ShapeCompilation` is the compiling half of :class:`gedi_nesy.solver.BatchedSolver` (a
DeepProbLog ``Solver``): a query's shape is its abstract term with DeepProbLog's AC cache; its
KLay circuit is compiled on first use (:func:`gedi_nesy.circuits.compile_shape`), read from the
disk cache when it holds it, or read off the circuit of its query structure, ground once for all
its labels (``gedi_nesy.shared_labels``).
"""

from __future__ import annotations

import hashlib
import math
import pickle
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from problog.logic import Term

from gedi_nesy import adapters
from gedi_nesy.arithmetic_plan import NotPlannable, clause_index, neural_ads, plan_query
from gedi_nesy.circuits import SHAPES_FORMAT, CompiledShape, compile_shape
from gedi_nesy.symbolic_weights import Unbatchable
from gedi_nesy.shared_labels import free_label_query, order_sensitive, time_bound

if TYPE_CHECKING:
    from deepproblog.arithmetic_circuit import ArithmeticCircuit


class ShapeCompilation:
    """Mixin of a DeepProbLog ``Solver`` (it uses ``self.cache``, ``self.model``, ``self.engine``
    and ``self.build_ac``): the compiled shapes, their statistics and the disk cache."""

    # bounds on grounding a query with its labels free (gedi_nesy.shared_labels), and the most
    # answers whose shapes are all compiled at once
    max_label_answers = 20000
    max_label_seconds = 300.0
    max_eager_answers = 256
    # arithmetic "auto": a query is planned on distributions (gedi_nesy.arithmetic_plan) when
    # its ground proofs would enumerate more than this many digit combinations
    min_planned_worlds = 1e5

    def init_shapes(self, model, disk_cache: str | Path | None, shared_labels: bool,
                    arithmetic: str = "auto") -> None:
        """The compilation's state (after ``Solver.__init__``): no shape compiled yet; the disk
        cache's file (keyed by the program text) read if there is one.  ``arithmetic``: plan
        queries over neural integers on distributions ("auto": where ground proofs would
        enumerate more than ``min_planned_worlds`` digit combinations; "always"; "never")."""
        self.shapes: dict[Term, CompiledShape] = {}
        self.arithmetic = arithmetic
        self._clauses: tuple[dict, dict] | None = None  # the program's clause index, neural ADs
        # shared_labels: one ground circuit per query structure for all its labels (with the
        # cache on, and for programs where freeing the label cannot change a probability)
        self.shared_labels = shared_labels and self.cache.cache and not order_sensitive(model.program)
        self._joint: dict[Term, Any] = {}  # free query -> its circuit (None: labels one by one)
        self._joint_left: dict[Term, int] = {}  # free query -> its answers not compiled yet
        self._ready: dict[Term, CompiledShape] = {}  # labels' shapes compiled with their structure
        self._store_epoch = 0  # solves so far (each clears DeepProbLog's tensor store)
        self._fresh: dict[Term, tuple[int, ArithmeticCircuit]] = {}  # per_solve circuits, their epoch
        # circuit_nodes: KLay edges of the compiled shapes
        # fallback_shapes: shapes evaluated as DeepProbLog's Solver does; joint_circuits: query
        # structures ground once for all their labels
        # planned_shapes: shapes evaluated on distributions (gedi_nesy.arithmetic_plan)
        self.stats = {"shapes": 0, "compile_seconds": 0.0, "disk_hits": 0, "circuit_nodes": 0, "fallback_shapes": 0,
                      "joint_circuits": 0, "planned_shapes": 0}
        self.disk_path: Path | None = None
        self._disk: dict[str, CompiledShape] = {}
        if disk_cache is not None:
            text = "\n".join(str(c) for c in model.program)
            digest = hashlib.sha256(text.encode()).hexdigest()[:16]
            self.disk_path = Path(disk_cache) / f"shapes-v{SHAPES_FORMAT}-{digest}.pkl"
            if self.disk_path.is_file():
                with open(self.disk_path, "rb") as f:
                    self._disk = pickle.load(f)

    def shape_key(self, q) -> Term:
        """The term a query is compiled for: its abstract term with DeepProbLog's AC cache
        (queries of one shape share a circuit), else the substituted query (as ExactEngine)."""
        return q.query if self.cache.cache else q.query.apply_term(q.substitution)

    def shape(self, q) -> CompiledShape:
        """The compiled shape of query ``q`` (compiled on first use, then from memory/disk)."""
        key = self.shape_key(q)
        shape = self.shapes.get(key)
        if shape is None:
            shape = self._load_or_compile(q, key)
            self.shapes[key] = shape
            self.stats["shapes"] += 1
            self.stats["circuit_nodes"] += shape.circuit_nodes
            self.stats["fallback_shapes"] += shape.fallback is not None
        return shape

    def _load_or_compile(self, q, key: Term) -> CompiledShape:
        skey = str(key)
        try:
            top_k = [name for name, net in self.model.networks.items() if net.k is not None]
            if top_k:  # grounding samples (train) or picks (eval) the network's k best outputs
                raise Unbatchable(f"the model's top-k network '{top_k[0]}' (its circuits change with its outputs)")
            if skey in self._disk:
                self.stats["disk_hits"] += 1
                return self._disk[skey]
            shape = self._planned(key)
            if shape is None:
                shape = self._compile_from_joint(q, key)
            if shape is None:
                shape = compile_shape(self.cache.get(q), key)
                self._release(q)
        except Unbatchable as e:
            shape = CompiledShape(key)
            shape.fallback, shape.per_solve = str(e), e.per_solve
            if e.per_solve:  # the circuit just ground names this solve's tensors
                self._fresh[key] = (self._store_epoch, self.cache.get(q))
            return shape
        self.stats["compile_seconds"] += shape.compile_seconds
        if self.disk_path is not None:
            self._keep_on_disk(skey, shape)
        return shape

    def _planned(self, key: Term) -> CompiledShape | None:
        """``key``'s shape as an arithmetic plan on distributions, or None where the query is
        not plannable, the mode is "never", or ("auto") its proofs are few enough to ground."""
        if self.arithmetic == "never" or self.evidence:
            return None
        if self._clauses is None:
            self._clauses = (clause_index(self.model.program), neural_ads(self.model.program))
        index, ads = self._clauses
        if not ads:
            return None
        t0 = time.time()
        try:
            plan = plan_query(key, index, ads)
        except NotPlannable:
            return None
        if self.arithmetic == "auto" and plan.worlds <= self.min_planned_worlds:
            return None
        self.stats["planned_shapes"] += 1
        return planned_shape(key, plan, time.time() - t0)

    def _keep_on_disk(self, skey: str, shape: CompiledShape) -> None:
        """Add ``shape`` to the disk cache's file (rewritten whole, through a temporary file)."""
        self._disk[skey] = shape
        self.disk_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.disk_path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(self._disk, f)
        tmp.replace(self.disk_path)

    def _compile_from_joint(self, q, key: Term) -> CompiledShape | None:
        """``q``'s shape read off the circuit of its query structure (``q`` with its labels
        free, ground once for all labels; see ``gedi_nesy.shared_labels``), or None where the
        labels are compiled one by one (no such structure, ``q``'s answer is not one of the
        structure's answers, or DeepProbLog's cache holds ``q``'s own circuit).

        A structure with at most ``max_eager_answers`` answers has every label's shape compiled
        at once and its circuit released; a larger one keeps its circuit until every label of
        it has been asked for."""
        if not self.shared_labels or adapters.has_cached_circuit(self, q):
            return None  # (DeepProbLog's circuit of this label is there already: read it)
        ready = self._ready.pop(key, None)
        if ready is not None:
            return ready
        free = free_label_query(q)
        if free is None:
            return None
        fkey = free.query
        first = fkey not in self._joint
        if first:
            self._joint[fkey] = self._ground_joint(free)
        ac = self._joint[fkey]
        if ac is None or key not in ac.answer_index:
            return None
        if first and len(ac.answer_index) <= self.max_eager_answers:
            return self._compile_all_answers(fkey, ac, key)
        try:
            return compile_shape(ac, key, answers=[key], with_ac_seconds=first)
        finally:
            self._joint_left[fkey] -= 1
            if self._joint_left[fkey] == 0:  # every label compiled: the joint circuit is not needed
                self._joint[fkey] = None

    def _compile_all_answers(self, fkey: Term, ac: ArithmeticCircuit, key: Term) -> CompiledShape:
        """Every answer's shape of the structure ``fkey`` (kept until asked for), its circuit
        released; returns ``key``'s, which carries the compile time of them all."""
        self._joint[fkey] = None
        shapes = {}
        for name in ac.answer_index:
            try:
                shapes[name] = compile_shape(ac, name, answers=[name], with_ac_seconds=name == key)
            except Unbatchable:  # compiled on its own when asked for (and evaluated as DeepProbLog does)
                if name == key:
                    raise
        shape = shapes.pop(key)
        shape.compile_seconds += sum(s.compile_seconds for s in shapes.values())
        for s in shapes.values():
            s.ground_seconds = s.compile_seconds = 0.0
        self._ready.update(shapes)
        return shape

    def _ground_joint(self, free) -> ArithmeticCircuit | None:
        """The circuit of query ``free`` (labels free) with every answer, or None when its
        grounding fails, has too many answers or takes too long."""
        try:
            with time_bound(self.max_label_seconds):
                ac = self.build_ac(free)
        except Exception:  # noqa: BLE001 (an instantiation error, a timeout: labels one by one)
            adapters.reset_grounding(self.engine)
            return None
        ac.answer_index = {name: node for name, node in ac.sdd.queries()}
        if not 0 < len(ac.answer_index) <= self.max_label_answers:
            return None
        self._joint_left[free.query] = len(ac.answer_index)
        self.stats["joint_circuits"] += 1
        return ac

    def _release(self, q) -> None:
        """Drop DeepProbLog's circuit of ``q`` from its in-memory cache once the KLay circuit is
        built: the batched solver no longer reads it (DeepProbLog rebuilds it if asked)."""
        adapters.drop_cached_circuit(self, q)


def planned_shape(key: Term, plan, seconds: float) -> CompiledShape:
    """A :class:`CompiledShape` evaluated by its arithmetic ``plan`` (no circuit)."""
    shape = CompiledShape(key)
    shape.answers = list(plan.answers)
    if plan.failed or not plan.pairs:  # no proof; or one that reads no network: a constant
        shape.answer_const, shape.answer_root = [-math.inf if plan.failed else 0.0], [-1]
    else:
        shape.plan = plan
        shape.answer_const = [None] * len(plan.answers)
        shape.answer_root = list(range(len(plan.answers)))
        shape.pairs = list(plan.pairs)
        shape.leaf_pair = list(range(len(plan.pairs)))
    shape.compile_seconds = seconds
    shape.circuit_nodes = len(plan.ops) + len(plan.events)
    return shape
