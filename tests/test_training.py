import pytest
import torch

from gedi_core.checkpoint import load_checkpoint, model_state
from gedi_core.config import TrainConfig
from gedi_core.methods import get_spec
from gedi_core.config import build_config
from gedi_core.train import train


def toy_cfg(method="gedi", **kw):
    layer = {"method": method, "iters": 40, "batch_size": 100, "log_every": 10, "ckpt_every": 20,
             "data": {"name": "circles", "n_train": 300, "n_test": 300}}
    layer.update(kw)
    return build_config(TrainConfig, [("method", get_spec(method).defaults), ("test", layer)])


@pytest.mark.slow
def test_resume_continues_exactly_where_a_run_stopped(tmp_path, interrupt_after):
    full = train(toy_cfg(), out=tmp_path / "full", progress=False)
    interrupt_after(1)  # killed right after the checkpoint of iteration 20
    with pytest.raises(KeyboardInterrupt):
        train(toy_cfg(), out=tmp_path / "split", progress=False)
    resumed = train(toy_cfg(), out=tmp_path / "split", resume=True, progress=False)
    a = model_state(load_checkpoint(tmp_path / "full" / "checkpoint.pt"))
    b = model_state(load_checkpoint(tmp_path / "split" / "checkpoint.pt"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["nmi"] == full["nmi"]


@pytest.mark.parametrize("method", ["gedi", "gedi_no_gen", "gedi_no_inv", "gedi_no_prior", "jem", "barlow", "swav"])
def test_every_method_runs(method):
    m = train(toy_cfg(method, iters=10), progress=False)
    assert 0.0 <= m["nmi"] <= 1.0


@pytest.mark.slow
def test_gedi_no_prior_collapses_and_is_flagged():
    m = train(toy_cfg("gedi_no_prior", iters=400, data={"name": "moons", "n_train": 1000, "n_test": 500}),
              progress=False)
    assert m["final_max_cluster_share"] > 0.9
    assert any("cluster collapse" in w for w in m["warnings"])


@pytest.mark.slow
def test_seeded_moons_runs_separate_the_moons():
    """GEDI separates the two moons (cluster accuracy >= 0.9; a run that cuts the moons
    crosswise scores about 0.75, a collapsed one 0.5) for a majority of seeds.

    Seed 0 is run first; only if it falls short are seeds 1 and 2 run, and both must pass (two of
    three). Measured on two machines of the CI kind: seed 0 gives acc 0.969 / NMI 0.83, seed 1
    acc 0.963 / NMI 0.81 (GEDI on moons is seed-sensitive, experiments/results/toy_table.md)."""

    def acc(seed: int) -> float:
        cfg = toy_cfg("gedi", iters=3000, batch_size=400, weights={"gen": 0.1}, seed=seed,
                      data={"name": "moons", "n_train": 2000, "n_test": 1000, "aug_noise": 0.06})
        return train(cfg, progress=False)["acc"]

    first = acc(0)
    if first < 0.9:
        others = [acc(1), acc(2)]
        assert min(others) >= 0.9, f"seed 0: {first}, seeds 1-2: {others}"
