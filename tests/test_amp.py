"""``amp``: bfloat16 autocast, the code path a CUDA run takes, exercised on the CPU.

No GPU is available to this project's CI, so the mixed-precision path (autocast around the
networks, the GEDI terms and SGLD; logits cast back to float32 before the NeSy inference) runs
here on the CPU, where ``mixed_precision`` autocasts too: same code, another device."""

from __future__ import annotations

import copy

import torch

from gedi_core.devices import mixed_precision
from gedi_nesy import NesyConfig, build_nesy_model, gedi_network, load_pools, task_queries
from gedi_nesy.step import NesyStep
from gedi_nesy.train import nesy_objective


def test_autocast_acts_on_the_cpu_only_when_asked():
    x, w = torch.randn(4, 8), torch.randn(8, 3)
    with mixed_precision(True, torch.device("cpu")):
        assert (x @ w).dtype == torch.bfloat16
    with mixed_precision(False, torch.device("cpu")):
        assert (x @ w).dtype == torch.float32


def test_a_nesy_step_under_amp_matches_float32_within_bfloat16_precision():
    """The same batch, weights and random streams: the GEDI+NeSy loss (L_NESY, L_GEN with SGLD,
    L_PRIOR) under autocast is finite, within bfloat16's precision of the float32 one, and
    its gradients point the same way."""
    cfg = NesyConfig()
    cfg.sgld.steps = 3
    pools = load_pools(cfg.data, 0)
    model = build_nesy_model(cfg.program, [gedi_network("gedi_net")], pools)
    batch = task_queries("addition", pools.train_y, 12, seed=0, source="train")
    module = model.networks["gedi_net"].network_module
    start = copy.deepcopy(module.state_dict())
    found = {}
    for amp in (False, True):
        module.load_state_dict(start)
        torch.manual_seed(0)
        step = NesyStep(model, {"gedi_net": nesy_objective(cfg, 10)}, 1.0, amp=amp)
        out = step(batch)
        module.zero_grad()
        out.loss.backward()
        grads = torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])
        assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss) and torch.isfinite(grads).all()
        found[amp] = (out.terms, grads)
    (terms32, g32), (terms16, g16) = found[False], found[True]
    assert set(terms32) == set(terms16) == {"nesy", "gen", "prior"}
    for k in ("nesy", "prior"):
        assert abs(terms16[k] - terms32[k]) <= 0.05 * abs(terms32[k]) + 0.02, (k, terms16[k], terms32[k])
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > 0.9


def test_gedi_core_trains_under_amp_with_finite_losses():
    """A toy GEDI run (SGLD, L_INV, L_PRIOR, the monitor's diagnostics) under autocast."""
    from gedi_core.config import TrainConfig, build_config
    from gedi_core.methods import get_spec
    from gedi_core.train import train

    layer = {"method": "gedi", "iters": 20, "batch_size": 100, "log_every": 10, "amp": True,
             "data": {"name": "circles", "n_train": 300, "n_test": 300}}
    cfg = build_config(TrainConfig, [("method", get_spec("gedi").defaults), ("test", layer)])
    m = train(cfg, progress=False)
    assert 0.0 <= m["nmi"] <= 1.0 and not any("not finite" in w for w in m.get("warnings", []))
