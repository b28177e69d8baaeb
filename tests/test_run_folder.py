"""No lost work: the run-folder cases of the error catalogue, kill -9 and resume, NaN/inf stops.

Each catalogue case prepares a run folder, runs ``gedi-core train`` on it, and checks exit status 2,
one line on stderr naming the problem, no traceback, and every file of the folder untouched."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from gedi_core import cli as core_cli
from gedi_core.errors import GediError
from gedi_core.loop import FitOptions, StepOutput, fit
from gedi_core.errors import NonFiniteError
from gedi_core.checkpoint import load_checkpoint, loop_state, model_state
from gedi_core.runfolder import RunFolder
from gedi_nesy import cli as nesy_cli
from gedi_nesy.data import embedded_digits

ROOT = Path(__file__).resolve().parents[1]
CORE = ["train", "--dataset", "circles", "--iters", "40", "--log-every", "10", "--ckpt-every", "20",
        "--n-train", "200", "--set", "data.n_test=100", "--batch-size", "50", "--no-progress"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.is_dir() else {}


def finished(out: Path, interrupt_after) -> None:
    assert core_cli.main([*CORE, "--out", str(out)]) == 0


def interrupted(out: Path, interrupt_after) -> None:
    interrupt_after(1)
    assert core_cli.main([*CORE, "--out", str(out)]) == 130


def damaged(content: bytes | None) -> Callable:
    def prepare(out: Path, interrupt_after) -> None:
        interrupted(out, interrupt_after)
        ckpt = out / "checkpoint.pt"
        ckpt.write_bytes(ckpt.read_bytes()[:200] if content is None else content)

    return prepare


def locked(resume: bool) -> Callable:
    """A run folder whose lock is held by a live process (PID 1, on this host)."""
    def prepare(out: Path, interrupt_after) -> None:
        if resume:
            interrupted(out, interrupt_after)
        else:
            out.mkdir()
        (out / ".lock").write_text(f"1 {socket.gethostname()}\n")

    return prepare


def older_layout(out: Path, interrupt_after) -> None:
    """An unfinished run whose checkpoint lacks a key a later version added (``loop.monitor_seen``)."""
    interrupted(out, interrupt_after)
    state = load_checkpoint(out / "checkpoint.pt")
    del state["loop"]["monitor_seen"], state["layout"], state["version"]
    torch.save(state, out / "checkpoint.pt")


def newer_layout(out: Path, interrupt_after) -> None:
    """An unfinished run whose checkpoint says a later layout wrote it."""
    interrupted(out, interrupt_after)
    state = load_checkpoint(out / "checkpoint.pt")
    state["layout"], state["version"] = 99, "9.9"
    torch.save(state, out / "checkpoint.pt")


def another_head(out: Path, interrupt_after) -> None:
    """An unfinished run whose checkpoint's cluster head was cut to 1 of its 2 rows."""
    interrupted(out, interrupt_after)
    state = load_checkpoint(out / "checkpoint.pt")
    model = state["step"]["model"]
    key = next(k for k in model if k.endswith("head.weight"))
    model[key] = model[key][:1]
    torch.save(state, out / "checkpoint.pt")


CASES = [
    ("out-empty", lambda out, _: None, ["--out", ""], "--out '': an empty path"),
    ("locked", locked(False), [], "process 1 on "),
    ("locked-resume", locked(True), ["--resume"], "is writing this run folder"),
    ("resume-older-layout", older_layout, ["--resume"],
     "written by an older version of this project (checkpoint layout 1; it lacks loop.monitor_seen)"),
    ("resume-newer-layout", newer_layout, ["--resume"],
     "written by a newer version of this project (gedi 9.9, checkpoint layout 99)"),
    ("resume-another-head", another_head, ["--resume"], "cannot resume from it (size mismatch for "),
    ("out-is-a-file", lambda out, _: out.write_text("not a folder"), [], "exists and is not a folder"),
    ("finished-run", finished, [], "holds a finished run"),
    ("finished-run-resume", finished, ["--resume"], "holds a finished run"),
    ("unfinished-without-resume", interrupted, [], "continue it with --resume"),
    ("resume-nothing", lambda out, _: out.mkdir(), ["--resume"], "nothing to resume"),
    ("resume-another-config", interrupted, ["--resume", "--seed", "1", "--lr", "0.01"], "lr: 0.001 -> 0.01; seed: 0 -> 1"),
    ("resume-truncated-checkpoint", damaged(None), ["--resume"], "cannot read the checkpoint"),
    ("resume-empty-checkpoint", damaged(b""), ["--resume"], "cannot read the checkpoint"),
]


@pytest.mark.parametrize("case_id,prepare,argv,expected", CASES, ids=[c[0] for c in CASES])
def test_run_folder_case_is_one_line_and_keeps_the_folder(case_id, prepare, argv, expected, tmp_path, capsys,
                                                          interrupt_after):
    out = tmp_path / "run"
    prepare(out, interrupt_after)
    before = snapshot(out)
    capsys.readouterr()
    code = core_cli.main([*CORE, "--out", str(out), *argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("gedi-core: error: ") and expected in lines[0], lines
    assert snapshot(out) == before or out.is_file()


def test_nesy_out_that_is_a_file_is_refused_before_loading(tmp_path, capsys):
    out = tmp_path / "run"
    out.write_text("x")
    t0 = time.time()
    assert nesy_cli.main(["train", "--out", str(out), "--no-progress"]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert time.time() - t0 < 5  # nothing was loaded or compiled


def test_a_run_that_failed_before_its_first_checkpoint_can_start_again(tmp_path, capsys):
    out = tmp_path / "run"
    # SGLD noise of 3e38 (finite) overflows float32 within the first step
    assert core_cli.main([*CORE, "--out", str(out), "--sgld-noise", "3e38"]) == 2
    line = capsys.readouterr().err.strip()
    assert "SGLD samples are not finite" in line and "\n" not in line
    assert not (out / "checkpoint.pt").exists() and not (out / "metrics.json").exists()
    assert core_cli.main([*CORE, "--out", str(out)]) == 0


# ----------------------------------------------------------------------------- NaN/inf in the loop
class Toy:
    """A one-parameter step whose loss turns NaN at step ``bad`` (1-based)."""

    def __init__(self, bad: int) -> None:
        self.w = torch.nn.Parameter(torch.ones(1))
        self.bad, self.calls = bad, 0

    def __call__(self, batch) -> StepOutput:
        self.calls += 1
        loss = (self.w * batch).sum() * (float("nan") if self.calls == self.bad else 1.0)
        return StepOutput(loss, {"gen": float(loss.detach())}, 1)

    def diagnose(self, batch):
        return {}

    def train(self, mode=True):
        pass

    def state_dict(self):
        return {"model": {"w": self.w.detach().clone()}, "local": {}}

    def load_state_dict(self, state):
        self.w.data.copy_(state["model"]["w"])


class Ones:
    steps_per_epoch = 4

    def epoch(self, epoch, start):
        return (torch.ones(1) for _ in range(start, self.steps_per_epoch))

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_nan_loss_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path):
    step = Toy(bad=7)
    run = RunFolder(tmp_path / "run", {"x": 1}).open()
    opt = torch.optim.SGD([step.w], lr=0.1)
    with pytest.raises(NonFiniteError, match=r"epoch 2 step 7: the loss is not finite \(gen = nan\)"):
        fit(step, Ones(), opt, FitOptions(epochs=3, log_every=100, ckpt_every=2, progress=False), run=run)
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert loop_state(state)["steps"] == 6 and math.isfinite(float(model_state(state)["w"]))
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_non_finite_parameters_are_never_checkpointed(tmp_path):
    step = Toy(bad=0)
    run = RunFolder(tmp_path / "run", {"x": 1}).open()
    opt = torch.optim.SGD([step.w], lr=1e38)  # finite loss and gradient, then w overflows to -inf
    with pytest.raises(NonFiniteError):
        fit(step, Ones(), opt, FitOptions(epochs=3, log_every=100, ckpt_every=2, progress=False), run=run)
    if (tmp_path / "run" / "checkpoint.pt").exists():
        assert math.isfinite(float(model_state(load_checkpoint(tmp_path / "run" / "checkpoint.pt"))["w"]))


def test_the_run_folder_writes_no_partial_files(tmp_path):
    run = RunFolder(tmp_path / "run", {"a": 1}).open()
    run.write_config()
    run.write_rows("log.csv", [{"iter": 1, "loss": 0.5}])
    run.finish({"nmi": 0.5})
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.yaml", "log.csv", "metrics.json"]
    with pytest.raises(GediError, match="finished run"):
        RunFolder(tmp_path / "run", {"a": 1}).open()


# ----------------------------------------------------------------------------- kill -9
def kill_after_first_checkpoint(cmd: list[str], out: Path, timeout: float = 120) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    try:
        while not (out / "checkpoint.pt").exists():
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.time() - t0 < timeout
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "metrics.json").exists(), "the run finished before it was killed"


@pytest.mark.slow
@pytest.mark.parametrize("which", ["core", "nesy"])
def test_kill_9_then_resume_equals_an_uninterrupted_run(which, tmp_path, capsys):
    if which == "core":
        argv = ["train", "--dataset", "circles", "--iters", "400", "--log-every", "20", "--ckpt-every", "20",
                "--n-train", "200", "--set", "data.n_test=100", "--batch-size", "20", "--sgld-steps", "1", "--no-progress"]
        main, module = core_cli.main, "gedi_core"
    else:
        argv = ["train", "--examples", "12", "--test-examples", "6", "--epochs", "12", "--batch-size", "6",
                "--sgld-steps", "2", "--no-progress", "--seed", "0"]
        main, module = nesy_cli.main, "gedi_nesy"
    killed = tmp_path / "killed"
    kill_after_first_checkpoint([sys.executable, "-m", module, *argv, "--out", str(killed)], killed)
    assert main([*argv, "--out", str(killed), "--resume"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main([*argv, "--out", str(tmp_path / "straight")]) == 0
    straight = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert resumed["nmi"] == straight["nmi"] and resumed.get("acc") == straight.get("acc")
    a = model_state(load_checkpoint(killed / "checkpoint.pt"))
    b = model_state(load_checkpoint(tmp_path / "straight" / "checkpoint.pt"))
    flat = (lambda d: {k: v for k, v in d.items()}) if which == "core" else (
        lambda d: {f"{n}.{k}": v for n, sd in d["networks"].items() for k, v in sd.items()})
    for k, v in flat(a).items():
        assert torch.equal(v, flat(b)[k]), k


# ----------------------------------------------------------------------------- gedi-nesy under torchrun
@pytest.mark.slow
def test_gedi_nesy_on_two_cpu_processes_equals_one_process_with_the_same_global_batch(tmp_path, capsys):
    """``torchrun --nproc_per_node=2 -m gedi_nesy train``: each rank takes half of every batch's
    queries and the gradients are averaged, so the NeSy arm (L_NESY, a mean over the batch) trains
    the same weights as one process with the same global batch, up to float summation order."""
    argv = ["train", "--arm", "nesy", "--examples", "12", "--test-examples", "6", "--epochs", "2",
            "--batch-size", "6", "--train-shift", "0", "--no-progress", "--seed", "0"]
    torchrun = Path(sys.executable).parent / "torchrun"
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([*launcher, "--nproc_per_node=2", "--master_port=29541", "-m", "gedi_nesy", *argv,
                           "--out", str(tmp_path / "ddp")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1 and json.loads(lines[0])["world_size"] == 2
    assert (tmp_path / "ddp" / "checkpoint.rank1.pt").is_file()
    assert loop_state(load_checkpoint(tmp_path / "ddp" / "checkpoint.pt"))["items"] == 12  # half of 2 x 12 queries
    assert nesy_cli.main([*argv, "--out", str(tmp_path / "one")]) == 0
    a = model_state(load_checkpoint(tmp_path / "ddp" / "checkpoint.pt"))["networks"]["gedi_net"]
    b = model_state(load_checkpoint(tmp_path / "one" / "checkpoint.pt"))["networks"]["gedi_net"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k


def test_a_key_added_to_the_config_later_resumes_at_its_default(tmp_path):
    """A checkpoint written before a config key existed resumes when the key keeps its default,
    and is refused when it does not."""
    old = RunFolder(tmp_path / "run", {"lr": 0.1}).open()
    old.write_config()
    old.save({"x": 1})
    defaults = {"lr": 0.1, "data": {"validation": 0.0}}
    same = RunFolder(tmp_path / "run", {"lr": 0.1, "data": {"validation": 0.0}}, resume=True, defaults=defaults)
    assert same.open().resume_state()["x"] == 1
    other = RunFolder(tmp_path / "run", {"lr": 0.1, "data": {"validation": 0.2}}, resume=True, defaults=defaults)
    with pytest.raises(GediError, match=r"data.validation: 0.0 -> 0.2"):
        other.open().resume_state()


# ----------------------------------------------------------------------------- other commands on a finished run
NESY_TINY = ["--examples", "4", "--test-examples", "2", "--epochs", "1", "--batch-size", "2", "--sgld-steps", "1",
             "--no-progress", "--seed", "0"]


def digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory) -> dict[str, Path]:
    """One tiny finished gedi-nesy run (trained on ``prog/sum.pl``, a relative path from its
    folder) and one tiny finished gedi-core run, shared by the tests below (never modified)."""
    root = tmp_path_factory.mktemp("finished")
    (root / "prog").mkdir()
    shutil.copy(ROOT / "programs" / "sum.pl", root / "prog" / "sum.pl")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert nesy_cli.main(["train", "--program", "prog/sum.pl", *NESY_TINY, "--out", "nesy"]) == 0
    finally:
        os.chdir(cwd)
    assert core_cli.main([*CORE, "--out", str(root / "core")]) == 0
    images = embedded_digits(seed=0).test_x[:4]
    np.savez(root / "imgs.npz", images=((images[:, 0].numpy() + 1) * 127.5).round().astype(np.uint8))
    (root / "q.txt").write_text("sum(tensor(images(0)), tensor(images(1)), X).\nsum(tensor(images(2)), tensor(images(3)), 5).\n")
    (root / "free.txt").write_text("sum(tensor(images(0)), tensor(images(1)), 3).\nsum(A, B, C).\n")
    (root / "a_file").write_text("x")
    (root / "pred").mkdir()
    (root / "pred" / "predictions.csv").write_text("earlier predictions\n")
    (root / "ev").mkdir()
    (root / "ev" / "samples.png").write_bytes(b"a figure an evaluation did not write")
    return {"root": root, "nesy": root / "nesy", "core": root / "core"}


OUTPUT_CASES = [
    ("export-over-the-checkpoint", "nesy", ["export", "--run", "{nesy}", "--out", "{nesy}/checkpoint.pt"],
     "{nesy}/checkpoint.pt: exists; it is never overwritten"),
    ("export-over-a-file", "nesy", ["export", "--run", "{nesy}", "--out", "{root}/a_file"], "{root}/a_file: exists"),
    ("export-a-run-file", "nesy", ["export", "--run", "{nesy}", "--out", "{nesy}/clusters.png"],
     "clusters.png belongs to the run folder {nesy}"),
    ("export-to-a-folder", "nesy", ["export", "--run", "{nesy}", "--out", "{root}"], "{root}: is a folder"),
    ("export-missing-folder", "nesy", ["export", "--run", "{nesy}", "--out", "{root}/none/net.pt"],
     "the folder {root}/none does not exist"),
    ("export-empty", "nesy", ["export", "--run", "{nesy}", "--out", ""], "--out '': an empty path"),
    ("predict-over-predictions", "nesy", ["predict", "--run", "{nesy}", "--images", "{root}/imgs.npz", "--out", "{root}/pred"],
     "{root}/pred/predictions.csv exists; it is never overwritten"),
    ("predict-out-a-file", "nesy", ["predict", "--run", "{nesy}", "--images", "{root}/imgs.npz", "--out", "{root}/a_file"],
     "--out {root}/a_file: exists and is not a folder"),
    ("predict-non-ground", "nesy", ["predict", "--run", "{nesy}", "--images", "{root}/imgs.npz", "--queries",
                                    "{root}/free.txt", "--out", "{root}/fresh"],
     "{root}/free.txt:2: cannot ground query 'sum(A,B,C)'"),
    ("sample-over-a-figure", "core", ["sample", "--run", "{core}", "--out", "{core}/losses.png"],
     "{core}/losses.png: exists; it is never overwritten"),
    ("sample-a-run-file", "core", ["sample", "--run", "{core}", "--out", "{core}/buffer.png"], "buffer.png belongs to the run folder"),
    ("sample-none", "core", ["sample", "--run", "{core}", "--n", "0"], "--n must be >= 1, got 0"),
    ("eval-out-a-file", "core", ["eval", "--run", "{core}", "--out", "{core}/metrics.json"],
     "--out {core}/metrics.json: exists and is not a folder"),
    ("eval-over-samples", "core", ["eval", "--run", "{core}", "--what", "samples", "--out", "{root}/ev"],
     "{root}/ev/samples.png exists; it is never overwritten"),
    ("eval-missing-folder", "core", ["eval", "--run", "{core}", "--out", "{root}/none/ev"],
     "the folder {root}/none does not exist"),
]


def run_one_line(main, argv: list[str], prog: str, capsys) -> str:
    """Run a CLI; assert exit status 2, one line on stderr, no traceback; return the line."""
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert "Traceback" not in captured.out + captured.err
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), (code, lines)
    return lines[0]


@pytest.mark.parametrize("case_id,which,argv,expected", OUTPUT_CASES, ids=[c[0] for c in OUTPUT_CASES])
def test_output_path_case_is_one_line_and_keeps_every_file(case_id, which, argv, expected, finished_runs, capsys):
    root = finished_runs["root"]
    fill = lambda a: a.format(**{k: str(v) for k, v in finished_runs.items()})  # noqa: E731
    before = digest(root)
    main, prog = (nesy_cli.main, "gedi-nesy") if which == "nesy" else (core_cli.main, "gedi-core")
    line = run_one_line(main, [fill(a) for a in argv], prog, capsys)
    assert fill(expected) in line, line
    assert digest(root) == before  # nothing written, nothing replaced (predictions.csv neither)


def test_eval_updates_its_own_eval_json(finished_runs, tmp_path, capsys):
    out = tmp_path / "ev"
    for what in ("nmi", "nmi,probe"):
        assert core_cli.main(["eval", "--run", str(finished_runs["core"]), "--what", what, "--out", str(out),
                              "--no-progress"]) == 0, capsys.readouterr().err
    assert {"nmi", "probe_test_acc"} <= set(json.loads((out / "eval.json").read_text()))


def test_outputs_in_a_read_only_folder_are_refused_before_any_work(finished_runs, capsys, monkeypatch):
    nesy, root = finished_runs["nesy"], finished_runs["root"]
    before = digest(root)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == nesy else real(p, mode))
    line = run_one_line(nesy_cli.main, ["predict", "--run", str(nesy), "--images", str(root / "imgs.npz")],
                        "gedi-nesy", capsys)
    assert f"cannot write there ({nesy} is not a writable folder)" in line
    line = run_one_line(nesy_cli.main, ["export", "--run", str(nesy), "--out", str(nesy / "net.pt")], "gedi-nesy", capsys)
    assert "is not a writable folder" in line
    assert digest(root) == before


def test_a_moved_run_predicts_the_same_from_anywhere_with_its_own_program(finished_runs, tmp_path, capsys, monkeypatch):
    """The run keeps the program it trained on (program.pl): moved, and called from a folder where
    its program's path means nothing, predict and eval give the same answers."""
    nesy, root = finished_runs["nesy"], finished_runs["root"]
    assert (nesy / "program.pl").read_text() == (root / "prog" / "sum.pl").read_text()
    metrics = json.loads((nesy / "metrics.json").read_text())
    assert metrics["inputs"]["program"]["sha256"] == hashlib.sha256((root / "prog" / "sum.pl").read_bytes()).hexdigest()
    argv = ["--images", str(root / "imgs.npz"), "--queries", str(root / "q.txt")]
    assert nesy_cli.main(["predict", "--run", str(nesy), *argv, "--out", str(tmp_path / "here")]) == 0
    moved = tmp_path / "moved"
    shutil.copytree(nesy, moved)
    monkeypatch.chdir(tmp_path)  # prog/sum.pl does not exist here
    assert nesy_cli.main(["predict", "--run", str(moved), *argv, "--out", str(tmp_path / "there")]) == 0
    for name in ("predictions.json", "queries.json"):
        assert (tmp_path / "here" / name).read_text() == (tmp_path / "there" / name).read_text()
    capsys.readouterr()
    assert nesy_cli.main(["eval", "--run", str(moved)]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["digit_acc"] == metrics["digit_acc"]


def test_predict_refuses_a_checkpoint_with_another_head_shape(finished_runs, tmp_path, capsys):
    doctored = tmp_path / "run"
    shutil.copytree(finished_runs["nesy"], doctored)
    state = load_checkpoint(doctored / "checkpoint.pt")
    weights = model_state(state)["networks"]["gedi_net"]
    key = next(k for k in weights if k.endswith("head.weight"))
    weights[key] = weights[key][:5]
    torch.save(state, doctored / "checkpoint.pt")
    line = run_one_line(nesy_cli.main, ["predict", "--run", str(doctored), "--images",
                                        str(finished_runs["root"] / "imgs.npz"), "--out", str(tmp_path / "p")],
                        "gedi-nesy", capsys)
    assert f"tensor '{key}' has shape (5, 32), but the network built from its config expects (10, 32)" in line
    assert not (tmp_path / "p").exists()


def test_resume_refuses_a_changed_program(tmp_path, capsys, interrupt_after):
    program = tmp_path / "sum.pl"
    program.write_text((ROOT / "programs" / "sum.pl").read_text())
    argv = ["train", "--program", str(program), *NESY_TINY[:4], "--epochs", "2", *NESY_TINY[6:], "--out", str(tmp_path / "run")]
    interrupt_after(1)
    assert nesy_cli.main(argv) == 130
    before = digest(tmp_path / "run")
    program.write_text(program.read_text().replace("Z is A + B", "Z is B + A"))
    line = run_one_line(nesy_cli.main, [*argv, "--resume"], "gedi-nesy", capsys)
    assert f"--resume: {program} differs from the program file the run trained on" in line
    assert digest(tmp_path / "run") == before


# ----------------------------------------------------------------------------- faults
@pytest.mark.parametrize("error, reason", [
    (OSError(28, "No space left on device"), "No space left on device"),  # 28: ENOSPC
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0"), "the write failed (disk full?)"),
], ids=["oserror", "torch-runtimeerror"])
def test_disk_full_is_one_line_and_keeps_the_last_good_checkpoint(error, reason, tmp_path, capsys, monkeypatch):
    """torch.save failing as on a full disk on the second checkpoint (an OSError, or the RuntimeError
    torch raises then): one line naming the folder and its free space; the first checkpoint stays,
    no temporary file or metrics.json is left."""
    real, calls = torch.save, {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:
            Path(f).write_bytes(b"partial")
            raise error
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "run"
    line = run_one_line(core_cli.main, [*CORE, "--out", str(out)], "gedi-core", capsys)
    assert f"{out}/checkpoint.pt: cannot write it ({reason});" in line and f"free in {out}" in line
    assert "the previous checkpoint.pt is kept" in line
    assert loop_state(load_checkpoint(out / "checkpoint.pt"))["steps"] == 20
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.yaml", "log.csv"]


def test_a_lock_whose_process_is_gone_is_taken_over_with_a_warning(tmp_path, capsys):
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(f"{proc.stdout.strip()} {socket.gethostname()}\n")
    assert core_cli.main([*CORE, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"taking over the lock of process {proc.stdout.strip()}" in err and "Traceback" not in err
    assert (out / "metrics.json").is_file() and not (out / ".lock").exists()


def test_two_writers_on_one_fresh_folder_the_second_is_refused(tmp_path, capsys):
    """Two gedi-core trainings started together on the same fresh --out (two threads: the lock
    holds a PID, and both have this one, which is alive): one finishes, the other is refused in one
    line (by the lock, or by the finished run it finds), and the folder holds the winner's files."""
    import threading

    out = tmp_path / "run"
    codes: list[int] = []
    threads = [threading.Thread(target=lambda: codes.append(core_cli.main([*CORE, "--out", str(out)])))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    captured = capsys.readouterr()
    assert sorted(codes) == [0, 2], captured.err
    errors = [line for line in captured.err.splitlines() if "error" in line]
    assert len(errors) == 1 and ("is writing this run folder" in errors[0] or "holds a finished run" in errors[0]), errors
    assert "Traceback" not in captured.err
    (winner,) = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    assert json.loads((out / "metrics.json").read_text())["nmi"] == winner["nmi"]
    assert not (out / ".lock").exists()


def test_ctrl_c_during_start_up_is_one_line_exit_130(tmp_path, capsys, monkeypatch):
    import gedi_nesy.image_sets

    def interrupted_load(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gedi_nesy.image_sets, "load_pools", interrupted_load)
    assert nesy_cli.main(["train", *NESY_TINY, "--out", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "gedi-nesy: interrupted" and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_damaged_compile_cache_file_is_rebuilt_with_a_warning(tmp_path, capsys):
    import pickle

    cache = tmp_path / "cache"
    argv = ["train", "--program", str(ROOT / "programs" / "sum.pl"), *NESY_TINY, "--compile-cache", str(cache)]
    assert nesy_cli.main([*argv, "--out", str(tmp_path / "a")]) == 0
    (cache_file,) = cache.glob("shapes-v*.pkl")
    cache_file.write_bytes(cache_file.read_bytes()[:100])
    capsys.readouterr()
    assert nesy_cli.main([*argv, "--out", str(tmp_path / "b")]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "compile-cache" in line]
    assert len(err) == 1 and f"warning: --compile-cache {cache_file}: damaged" in err[0], err
    assert isinstance(pickle.loads(cache_file.read_bytes()), dict)  # rebuilt


def test_run_folder_catalogue_is_listed_in_docs():
    """docs/errors.md lists every case of both tables of this file."""
    doc = (ROOT / "docs" / "errors.md").read_text()
    missing = [c[0] for c in CASES + OUTPUT_CASES if f"`{c[0]}`" not in doc]
    assert not missing, missing


def test_an_older_run_without_its_program_reads_the_programs_path(finished_runs, tmp_path, capsys, monkeypatch):
    """A run folder written before runs kept their program (no program.pl) works as before: the
    program is read from its path (relative to the current folder), and is one line when missing."""
    old = tmp_path / "old"
    shutil.copytree(finished_runs["nesy"], old)
    (old / "program.pl").unlink()
    argv = ["predict", "--run", str(old), "--images", str(finished_runs["root"] / "imgs.npz")]
    monkeypatch.chdir(finished_runs["root"])  # where prog/sum.pl is
    assert nesy_cli.main([*argv, "--out", str(tmp_path / "p")]) == 0, capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    line = run_one_line(nesy_cli.main, [*argv, "--out", str(tmp_path / "q")], "gedi-nesy", capsys)
    assert "program prog/sum.pl: no such file" in line
