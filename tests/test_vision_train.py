"""The epoch trainer, the eval/sample commands and DDP on synthetic Fashion-MNIST files (CPU, seconds)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from vision_fakes import write_mnist_like

from gedi_core.checkpoint import load_checkpoint, local_state, model_state
from gedi_core.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "fashion-mnist", "--width", "8", "--sgld-steps", "2", "--buffer-size", "64",
        "--batch-size", "16", "--log-every", "2", "--no-progress"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_mnist_like(tmp_path_factory.mktemp("data"), "FashionMNIST", n_train=64, n_test=40)


def last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("method", ["gedi", "gedi_no_gen", "jem", "barlow", "swav"])
def test_every_method_trains_on_images(root, tmp_path, capsys, method):
    assert main(["train", *TINY, "--data-root", str(root), "--method", method, "--epochs", "1",
                 "--out", str(tmp_path / "run")]) == 0
    m = last_json(capsys)
    assert {"nmi", "acc", "seconds", "seconds_per_epoch", "images_per_s"} <= set(m) and 0 <= m["nmi"] <= 1
    assert m["iters"] == 64 // 16
    for name in ("config.yaml", "log.csv", "epochs.csv", "checkpoint.pt", "metrics.json", "losses.png"):
        assert (tmp_path / "run" / name).exists(), name
    assert (tmp_path / "run" / "buffer.png").exists() == (method in ("gedi", "jem"))


def test_resume_after_an_epoch_equals_an_uninterrupted_run(root, tmp_path, capsys, interrupt_after):
    common = ["train", *TINY, "--data-root", str(root), "--method", "gedi", "--eval-every", "1", "--epochs", "2"]
    assert main([*common, "--out", str(tmp_path / "full")]) == 0
    full = last_json(capsys)
    interrupt_after(1)  # killed right after the first epoch's checkpoint
    assert main([*common, "--out", str(tmp_path / "split")]) == 130
    assert main([*common, "--out", str(tmp_path / "split"), "--resume"]) == 0
    resumed = last_json(capsys)
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    for k in model_state(a):
        assert torch.equal(model_state(a)[k], model_state(b)[k]), k
    buffers = [local_state(s)["extra"]["objective"]["sampler"]["data"] for s in (a, b)]
    assert torch.equal(*buffers)
    assert resumed["nmi"] == full["nmi"] and resumed["iters"] == full["iters"] == 8
    assert len((tmp_path / "split" / "epochs.csv").read_text().strip().splitlines()) == 1 + 2


def tiny_extractor() -> nn.Module:
    """A stand-in FID feature extractor (the tests run offline, without Inception weights)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_eval_and_sample_commands(root, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--data-root", str(root), "--method", "gedi", "--epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--data-root", str(root), "--what", "nmi,probe,ood,fid,samples",
                 "--ood-dataset", "fashion-mnist", "--fid-samples", "20", "--fid-steps", "3",
                 "--fid-features", "test_vision_train:tiny_extractor", "--no-progress"]) == 0
    m = last_json(capsys)
    assert 0 <= m["nmi"] <= 1 and 0 <= m["probe_test_acc"] <= 1 and m["fid"] >= 0
    assert m["ood_auroc_grad_norm_fashion-mnist"] == pytest.approx(0.5)  # same data in and out: chance
    assert (run / "samples.png").exists() and json.loads((run / "eval.json").read_text())["fid_samples"] == 20
    assert main(["sample", "--run", str(run), "--data-root", str(root), "--n", "9", "--steps", "2"]) == 0
    assert (run / "samples_2.png").exists()


def test_eval_errors_are_one_line(root, tmp_path, capsys):
    assert main(["eval", "--run", str(tmp_path / "nope")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    run = tmp_path / "run"
    assert main(["train", *TINY, "--data-root", str(root), "--method", "swav", "--epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--data-root", str(root), "--what", "fid",
                 "--fid-features", "no_such_module:f"]) == 2
    err = capsys.readouterr().err
    assert "cannot import" in err and err.strip().count("\n") == 0


@pytest.mark.slow
def test_torchrun_two_cpu_processes(root, tmp_path):
    """``torchrun --nproc_per_node=2 -m gedi_core train`` on CPU (gloo): one JSON line, per-rank buffers."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun) if torchrun.exists() else sys.executable, *([] if torchrun.exists() else
           ["-m", "torch.distributed.run"]), "--nproc_per_node=2", "--master_port=29533", "-m", "gedi_core", "train",
           *TINY, "--data-root", str(root), "--method", "gedi", "--epochs", "1", "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.strip().splitlines() if line.startswith("{")]
    assert len(lines) == 1
    m = json.loads(lines[0])
    assert m["world_size"] == 2 and m["iters"] == 64 // 2 // 16
    def buffer(name: str) -> torch.Tensor:
        state = local_state(load_checkpoint(tmp_path / "ddp" / name))
        return state["extra"]["objective"]["sampler"]["data"]

    b0, b1 = buffer("checkpoint.pt"), buffer("checkpoint.rank1.pt")
    assert b0.shape == b1.shape and not torch.equal(b0, b1)
