"""No lost work: the run-folder cases of the error catalogue, kill -9 and resume, NaN/inf stops.

Each catalogue case prepares a run folder, runs ``gedi-core train`` on it, and checks exit status 2,
one line on stderr naming the problem, no traceback, and every file of the folder untouched."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

from gedi_core import cli as core_cli
from gedi_core.errors import GediError
from gedi_core.loop import FitOptions, StepOutput, fit
from gedi_core.objective import NonFiniteError
from gedi_core.runfolder import RunFolder, load_checkpoint
from gedi_nesy import cli as nesy_cli

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


CASES = [
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
    assert state["loop"]["steps"] == 6 and math.isfinite(float(state["step"]["model"]["w"]))
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_non_finite_parameters_are_never_checkpointed(tmp_path):
    step = Toy(bad=0)
    run = RunFolder(tmp_path / "run", {"x": 1}).open()
    opt = torch.optim.SGD([step.w], lr=1e38)  # finite loss and gradient, then w overflows to -inf
    with pytest.raises(NonFiniteError):
        fit(step, Ones(), opt, FitOptions(epochs=3, log_every=100, ckpt_every=2, progress=False), run=run)
    if (tmp_path / "run" / "checkpoint.pt").exists():
        assert math.isfinite(float(load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"]["model"]["w"]))


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
    a = load_checkpoint(killed / "checkpoint.pt")["step"]["model"]
    b = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["step"]["model"]
    flat = (lambda d: {k: v for k, v in d.items()}) if which == "core" else (
        lambda d: {f"{n}.{k}": v for n, sd in d["networks"].items() for k, v in sd.items()})
    for k, v in flat(a).items():
        assert torch.equal(v, flat(b)[k]), k


# ----------------------------------------------------------------------------- gedi-nesy under torchrun
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
    assert load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["loop"]["items"] == 12  # half of 2 x 12 queries
    assert nesy_cli.main([*argv, "--out", str(tmp_path / "one")]) == 0
    a = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["step"]["model"]["networks"]["gedi_net"]
    b = load_checkpoint(tmp_path / "one" / "checkpoint.pt")["step"]["model"]["networks"]["gedi_net"]
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
