"""Compile cost of BatchedEngine per query structure against per label, on DeepProbLog's own
``examples/MNIST/models/addition.pl`` (``multi_addition/3``, queries as DeepProbLog's
``MNISTOperator`` builds them: ``multi_addition([p0_0, ...], [p1_0, ...], Sum)``).

For each number of digits N and each mode (``per-label``: one grounding and SDD per distinct
sum, as DeepProbLog's circuit cache does; ``shared``: the query ground once with its sum free,
one circuit read off per sum), compiles the shapes of ``--labels`` distinct sums (spread over
0 .. 2 (10^N - 1); ``all``: every sum) in a fresh process and prints the shapes, groundings,
compile seconds, the process's peak RSS and the RSS kept after compiling (MB).

    OMP_NUM_THREADS=1 python -m experiments.nesy.engine_compile_cost --digits 1 2 --labels 10
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

from experiments.common.reporting import REPO


def rss_mb() -> float:
    """The process's resident memory now (MB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(digits: int, labels: str, shared: bool) -> dict:
    """Compile the shapes of the chosen sums in this process; the numbers of the run."""
    import torch
    from problog.logic import Constant, Term, list2term

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        import deepproblog.examples
        from deepproblog.examples.MNIST.network import MNIST_Net
        from deepproblog.model import Model
        from deepproblog.network import Network
        from deepproblog.query import Query

    from gedi_nesy.engine import BatchedEngine

    torch.set_num_threads(1)
    program = Path(deepproblog.examples.__file__).parent / "MNIST/models/addition.pl"
    model = Model(str(program), [Network(MNIST_Net(), "mnist_net", batching=True)])
    try:
        engine = BatchedEngine(model, shared_labels=shared)
    except TypeError:  # an engine from before shared labels (baseline runs)
        engine = BatchedEngine(model)
    model.set_engine(engine, cache=True)
    top = 2 * (10 ** digits - 1)
    if labels == "all":
        sums = list(range(top + 1))
    else:
        k = int(labels)
        sums = sorted({round(i * top / max(k - 1, 1)) for i in range(k)})
    sub = {Term(f"p{i}_{j}"): Term("tensor", Term("train", Constant(0))) for i in range(2) for j in range(digits)}
    numbers = [list2term([Term(f"p{i}_{j}") for j in range(digits)]) for i in range(2)]
    gc.collect()
    before = rss_mb()
    t0 = time.process_time()
    for s in sums:
        model.solver.shape(Query(Term("multi_addition", *numbers, Constant(s)), sub))
    cpu = time.process_time() - t0
    gc.collect()
    st = model.solver.stats
    return {"digits": digits, "mode": "shared" if shared else "per-label", "sums": len(sums),
            "shapes": st["shapes"], "groundings": st.get("joint_circuits", 0) + st["shapes"] * (not shared),
            "compile_cpu_s": round(cpu, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "kept_rss_mb": round(rss_mb() - before)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--digits", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--labels", default="10", help="distinct sums per N (a number, or 'all')")
    ap.add_argument("--modes", nargs="+", default=["per-label", "shared"], choices=["per-label", "shared"])
    ap.add_argument("--one", nargs=2, metavar=("N", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(measure(int(args.one[0]), args.labels, args.one[1] == "shared")))
        return
    print("digits  mode       sums  shapes  groundings  compile CPU s  peak RSS MB  kept RSS MB")
    for n in args.digits:
        for mode in args.modes:
            out = subprocess.run([sys.executable, "-m", "experiments.nesy.engine_compile_cost", "--labels", args.labels,
                                  "--one", str(n), mode], cwd=REPO, capture_output=True, text=True,
                                 check=True).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            print(f"{r['digits']:>6}  {r['mode']:<9} {r['sums']:>5}  {r['shapes']:>6}  {r['groundings']:>10}  "
                  f"{r['compile_cpu_s']:>13}  {r['peak_rss_mb']:>11}  {r['kept_rss_mb']:>11}", flush=True)


if __name__ == "__main__":
    main()
