"""What a new user meets first: figures that show the right optima, a progress bar and collapse
warnings that mean what they say, a fast ``--help``, data roots for OOD sets, offline FID
features, and the small cases (a grounding that never ends, a one-value domain, an unfinished
run, NaN metrics). The one-line errors here are the "Small cases" of docs/errors.md."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from vision_fakes import write_mnist_like

from gedi_core import cli as core_cli
from gedi_core.errors import GediError
from gedi_core.monitor import FailureMonitor, collapse_message, collapse_share_threshold, prior_term_optimum
from gedi_core.figures import loss_panels
from gedi_nesy import cli as nesy_cli

ROOT = Path(__file__).resolve().parents[1]
SUM_PL = ROOT / "programs" / "sum.pl"
NESY = ["train", "--program", str(SUM_PL), "--examples", "4", "--test-examples", "2", "--epochs", "1",
        "--batch-size", "2", "--sgld-steps", "1"]
TINY_VISION = ["--dataset", "fashion-mnist", "--width", "8", "--sgld-steps", "2", "--buffer-size", "64",
               "--batch-size", "16", "--log-every", "2", "--no-progress"]


def strict_json(line: str):
    """``json.loads`` that refuses NaN and infinities (not JSON)."""
    def refuse(name: str):
        raise ValueError(f"not JSON: {name}")
    return json.loads(line, parse_constant=refuse)


def one_error_line(capsys, prog: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, lines
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- losses.png
def test_prior_optimum_is_the_minimum_of_the_term_it_belongs_to():
    k = 10
    assert prior_term_optimum("entropy", None, k) == pytest.approx(-math.log(k), abs=1e-5)
    assert prior_term_optimum("uniform", None, k) == pytest.approx(math.log(k), abs=1e-5)
    target = torch.tensor([0.4, 0.3, 0.2, 0.1])
    assert prior_term_optimum("uniform", target, 4) == pytest.approx(float(-(target * target.log()).sum()), abs=1e-5)
    assert prior_term_optimum("entropy", target, 4) == pytest.approx(-math.log(4), abs=1e-5)
    from gedi_core.losses import prior_entropy_loss, prior_loss

    logits = torch.randn(500, 4, generator=torch.Generator().manual_seed(0)) * 3
    for form, term in (("entropy", prior_entropy_loss), ("uniform", prior_loss)):
        for t in (None, target):
            values = torch.stack([term(logits[i:i + 5], t) for i in range(0, 500, 5)])
            assert float(values.min()) >= prior_term_optimum(form, t, 4) - 1e-4  # no batch goes below it


def test_loss_panels_draw_l_nesy_and_the_trained_prior_optimum():
    rows = [{"iter": 1, "nesy": 2.0, "gen": 0.3, "prior": -1.5, "prior_gap": 0.4},
            {"iter": 2, "nesy": 1.0, "gen": 0.2, "prior": -2.0, "prior_gap": 0.1}]
    panels = {key: optimum for key, _, optimum, _ in loss_panels(rows, 10, prior_optimum=-math.log(10))}
    assert panels == {"nesy": 0.0, "prior": pytest.approx(-math.log(10)), "gen": None}  # no empty L_INV panel
    # a gedi-core run: cross-entropy prior (optimum ln c), monitored L_INV
    core = [{"iter": 1, "gen": 0.1, "prior": 2.4, "prior_gap": 0.1, "inv_gap": 0.2}]
    panels = {key: optimum for key, _, optimum, _ in loss_panels(core, 10)}
    assert panels == {"prior": pytest.approx(math.log(10)), "inv": 0.0, "gen": None}
    # an untrained prior is the monitored cross-entropy, whatever the trained form would be
    untrained = {key: optimum for key, _, optimum, _ in loss_panels([{"iter": 1, "prior_gap": 0.3}], 10, -2.3)}
    assert untrained == {"prior": pytest.approx(math.log(10))}


# ----------------------------------------------------------------------------- collapse warnings
def histogram_share(counts: list[int]) -> tuple[float, int]:
    return max(counts) / sum(counts), sum(counts)


def test_a_collapsed_prediction_histogram_warns_and_a_healthy_one_does_not():
    collapsed = [810] + [21] * 9  # 81 % of 1000 images in one cluster (a collapsed run: digit_acc 0.197)
    healthy = [150, 120, 110, 100, 95, 90, 90, 85, 80, 80]  # the largest cluster 15 %
    share, n = histogram_share(collapsed)
    assert collapse_message(share, n, 10, "the test images") is not None
    assert "81%" in collapse_message(share, n, 10, "the test images")
    share, n = histogram_share(healthy)
    assert collapse_message(share, n, 10) is None
    # the largest healthy share seen on MNIST (19.5 %) and half the images in one cluster
    assert collapse_message(0.195, 2000, 10) is None and collapse_message(0.5, 2000, 10) is not None
    # two clusters: 95 % collapses, 60 % does not; a single cluster never does
    assert collapse_message(0.95, 1000, 2) is not None and collapse_message(0.6, 1000, 2) is None
    assert collapse_message(1.0, 1000, 1) is None
    # a program prior that expects 40 % in one class raises the bar
    assert collapse_message(0.5, 2000, 10, expected=0.4) is None


def test_the_threshold_allows_for_the_noise_of_few_images_and_batches():
    assert collapse_share_threshold(10) == pytest.approx(0.3)
    assert collapse_share_threshold(10, 64) > collapse_share_threshold(10, 2000) > 0.3
    assert collapse_share_threshold(2, 100) == pytest.approx(0.9)
    assert collapse_message(1.0, 1, 2) is None  # one image says nothing about collapse
    # a training batch: a healthy run had 57 % of a 120-image batch in one cluster mid-training
    monitor = FailureMonitor(10)
    assert monitor.check({"max_cluster_share": 0.57, "batch_images": 120}) == []
    warned = monitor.check({"max_cluster_share": 0.95, "batch_images": 120, "prior_gap": 1.0})
    assert len(warned) == 1 and warned[0].startswith("cluster collapse: one cluster takes 95% of the batch")


def test_a_run_whose_final_images_collapsed_reports_it(tmp_path, capsys, monkeypatch):
    """The final evaluation's histogram goes through the rule (here made to say 81 % in one cluster)."""
    import gedi_nesy.train as train_module

    real = train_module.evaluate_nesy

    def collapsed(*args, **kwargs):
        return {**real(*args, **kwargs), "max_cluster_share": 0.81}

    monkeypatch.setattr(train_module, "evaluate_nesy", collapsed)
    assert nesy_cli.main([*NESY, "--no-progress"]) == 0
    metrics = strict_json(capsys.readouterr().out.strip().splitlines()[-1])
    final = [w for w in metrics["warnings"] if w.startswith("final evaluation: cluster collapse: ")]
    assert len(final) == 1 and "81% of the " in final[0] and "test images" in final[0], metrics["warnings"]


# ----------------------------------------------------------------------------- a tiny NeSy run
@pytest.fixture(scope="module")
def nesy_run(tmp_path_factory):
    """One tiny gedi-nesy run (progress bar on), its stderr and its JSON line."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("nesy") / "run"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = nesy_cli.main([*NESY, "--out", str(out)])
    assert code == 0, stderr.getvalue()[-2000:]
    return out, stderr.getvalue(), strict_json(stdout.getvalue().strip().splitlines()[-1])


@pytest.mark.slow
def test_progress_bar_names_the_total_and_shows_l_nesy(nesy_run):
    _, err, metrics = nesy_run
    assert "total=" in err and "nesy=" in err and "loss=" not in err
    assert isinstance(metrics["warnings"], list)


@pytest.mark.slow
def test_figures_of_a_nesy_run(nesy_run):
    out, _, _ = nesy_run
    for name in ("losses.png", "classes.png", "confusion.png", "samples.png"):
        assert (out / name).stat().st_size > 1000, name


@pytest.mark.slow
def test_predict_on_an_unfinished_run_warns_in_one_line(nesy_run, tmp_path, capsys):
    import numpy as np

    run = tmp_path / "unfinished"
    shutil.copytree(nesy_run[0], run)
    (run / "metrics.json").unlink()
    np.savez(tmp_path / "i.npz", images=np.zeros((2, 28, 28), dtype=np.uint8))
    assert nesy_cli.main(["predict", "--run", str(run), "--images", str(tmp_path / "i.npz"),
                          "--out", str(tmp_path / "pred")]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gedi-nesy: warning: ") and "unfinished" in lines[0], lines
    assert strict_json(captured.out.strip())["images"] == 2
    assert nesy_cli.main(["predict", "--run", str(nesy_run[0]), "--images", str(tmp_path / "i.npz"),
                          "--out", str(tmp_path / "pred2")]) == 0
    assert capsys.readouterr().err.strip() == ""  # a finished run: no warning


# ----------------------------------------------------------------------------- start-up
def test_parsing_and_flag_errors_import_neither_torch_nor_problog():
    code = ("import sys\nfrom gedi_nesy.cli import build_parser, main\n"
            "build_parser().parse_args(['train'])\ncode = main(['train', '--arm', 'nope'])\n"
            "print(code, [m for m in ('torch', 'problog', 'deepproblog') if m in sys.modules])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.stdout.split() == ["2", "[]"], proc.stdout + proc.stderr
    assert proc.stderr.strip() == "gedi-nesy: error: arm: unknown arm 'nope' (known: nesy, gedi, gedi+nesy)"


def test_the_package_loads_its_api_on_first_use():
    import gedi_nesy

    assert {"NesyConfig", "train_nesy", "BatchedEngine"} <= set(dir(gedi_nesy))
    assert gedi_nesy.NesyConfig().arm == "gedi+nesy"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        gedi_nesy.nope  # noqa: B018


# ----------------------------------------------------------------------------- small cases
def test_small_ground_timeout(tmp_path, capsys):
    program = tmp_path / "nat.pl"
    program.write_text("nn(gedi_net, [X], Y, [0,1,2,3,4,5,6,7,8,9]) :: digit(X, Y).\nnat(0).\n"
                       "nat(N) :- nat(M), N is M+1.\nsum(X, Y, Z) :- digit(X, A), digit(Y, B), nat(Z), Z is A + B.\n")
    out = tmp_path / "run"
    code = nesy_cli.main([*NESY[:1], "--program", str(program), "--task", "sum", *NESY[3:], "--no-progress",
                          "--ground-timeout", "1", "--out", str(out)])
    line = one_error_line(capsys, "gedi-nesy")
    assert code == 2 and f"{program}: grounding query sum(" in line and "longer than 1 s (--ground-timeout" in line
    assert not (out / "checkpoint.pt").exists()


def test_time_limit_stops_a_loop_and_restores_the_alarm():
    import signal

    from gedi_nesy.limits import time_limit

    before = signal.getsignal(signal.SIGALRM)
    with pytest.raises(GediError, match="too slow"):
        with time_limit(0.2, "too slow"):
            while True:
                time.sleep(0.01)
    assert signal.getsignal(signal.SIGALRM) is before and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    with time_limit(5, "unused"):
        pass
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0


def test_time_limit_survives_an_alarm_lost_in_a_finalizer(capsys):
    """Python ignores an exception raised inside ``__del__`` (a finalizer the garbage collector
    runs mid-grounding): the first alarm, landing there, is lost; the repeat stops the block,
    and the lost one is not reported."""
    from gedi_nesy.limits import time_limit

    class SlowFinalizer:
        def __del__(self):
            time.sleep(0.3)

    with pytest.raises(GediError, match="too slow"):
        with time_limit(0.1, "too slow"):
            held = SlowFinalizer()
            del held  # the alarm fires during its __del__
            for _ in range(300):  # 3 s: far past the limit
                time.sleep(0.01)
    assert "Exception ignored" not in capsys.readouterr().err


def test_small_one_value_domain(tmp_path, capsys):
    program = tmp_path / "one.pl"
    program.write_text("nn(gedi_net, [X], Y, [0]) :: digit(X, Y).\n"
                       "sum(X, Y, Z) :- digit(X, A), digit(Y, B), Z is A + B.\n")
    code = nesy_cli.main([*NESY[:1], "--program", str(program), "--task", "sum", *NESY[3:], "--no-progress",
                          "--out", str(tmp_path / "run")])
    line = one_error_line(capsys, "gedi-nesy")
    assert code == 2 and f"{program}:1:" in line and "needs >= 2 values" in line and "--num-clusters" not in line


def test_nan_metrics_print_as_null(capsys):
    assert core_cli.main(["train", "--dataset", "moons", "--n-train", "1", "--iters", "2", "--no-progress"]) == 0
    metrics = strict_json(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["warnings"] == []  # one image cannot show collapse
    assert core_cli.json_line({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}}) == \
        '{"a": null, "b": [1.0, null], "c": {"d": null}}'


# ----------------------------------------------------------------------------- data roots, FID features
@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory):
    return write_mnist_like(tmp_path_factory.mktemp("fashion"), "FashionMNIST", n_train=64, n_test=40)


def test_debian_fashion_mnist_is_found_when_data_root_points_elsewhere(fashion_root, tmp_path, monkeypatch):
    from gedi_core.config import DataConfig
    from gedi_core.data import load_dataset
    from gedi_core.data import vision

    monkeypatch.setitem(vision.SYSTEM_DIRS, "fashion-mnist", [fashion_root / "FashionMNIST" / "raw"])
    (tmp_path / "mnist-only").mkdir()
    data = load_dataset(DataConfig(name="fashion-mnist", data_root=str(tmp_path / "mnist-only")), seed=0)
    assert data.train_x.shape == (64, 1, 28, 28) and data.test_x.shape == (40, 1, 28, 28)


def test_an_ood_set_needs_only_one_split(tmp_path):
    from gedi_core.config import DataConfig
    from gedi_core.evaluation.ood import ood_images

    root = write_mnist_like(tmp_path / "d", "MNIST", n_train=30, n_test=20)
    x, split = ood_images("mnist", DataConfig(name="fashion-mnist"), 0, str(root))
    assert split == "test" and x.shape == (20, 1, 28, 28)
    for f in (root / "MNIST" / "raw").glob("t10k-*"):
        f.unlink()
    x, split = ood_images("mnist", DataConfig(name="fashion-mnist"), 0, str(root))
    assert split == "train" and x.shape == (30, 1, 28, 28)
    for f in (root / "MNIST" / "raw").glob("train-*"):
        f.unlink()
    with pytest.raises(GediError, match="dataset 'mnist' \\(test split\\) not found"):
        ood_images("mnist", DataConfig(name="fashion-mnist"), 0, str(root))


def test_eval_reads_the_ood_set_from_its_own_root(fashion_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert core_cli.main(["train", *TINY_VISION, "--data-root", str(fashion_root), "--method", "gedi_no_gen",
                          "--epochs", "1", "--out", str(run)]) == 0
    mnist = write_mnist_like(tmp_path / "mnist", "MNIST", n_train=30, n_test=20)
    for f in (mnist / "MNIST" / "raw").glob("train-*"):
        f.unlink()  # only the test split t10k: enough for OOD
    capsys.readouterr()
    assert core_cli.main(["eval", "--run", str(run), "--data-root", str(fashion_root), "--what", "ood",
                          "--ood-dataset", "mnist", "--ood-root", str(mnist), "--no-progress"]) == 0
    metrics = strict_json(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= metrics["ood_auroc_grad_norm_mnist"] <= 1.0 and "ood_split_mnist" not in metrics


def test_fid_features_command_writes_an_extractor_eval_can_load(fashion_root, tmp_path, capsys):
    from gedi_core.evaluation.fid import load_feature_extractor

    out = tmp_path / "features.pt"
    argv = ["fid-features", "--dataset", "fashion-mnist", "--data-root", str(fashion_root), "--epochs", "1",
            "--out", str(out)]
    assert core_cli.main(argv) == 0
    summary = strict_json(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["train_images"] == 64 and 0.0 <= summary["held_out_acc"] <= 1.0
    extractor = load_feature_extractor(str(out))
    assert extractor(torch.rand(3, 3, 28, 28)).shape == (3, summary["feature_dim"])
    before = out.read_bytes()
    assert core_cli.main(argv) == 2  # never overwritten
    assert "exists; it is never overwritten: choose a fresh path" in one_error_line(capsys, "gedi-core")
    assert out.read_bytes() == before
    assert core_cli.main(["fid-features", "--dataset", "moons", "--out", str(tmp_path / "x.pt")]) == 2
    assert "--dataset moons: not an image data set" in one_error_line(capsys, "gedi-core")
