"""The checkpoint layout's one owner (gedi_core.checkpoint): what the loop writes is what the
accessors read, and a checkpoint of another layout is one line naming the layouts (fast)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from gedi_core import __version__
from gedi_core import checkpoint as ckpt
from gedi_core.errors import GediError
from gedi_core.loop import FitOptions, StepOutput, fit
from gedi_core.runfolder import RunFolder, save_checkpoint


class Line:
    """A one-parameter step: loss (w - 3)^2, a counter as its local state."""

    def __init__(self) -> None:
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.calls = 0

    def __call__(self, batch: Any) -> StepOutput:
        self.calls += 1
        return StepOutput((self.w - 3) ** 2, {}, 1)

    def diagnose(self, batch: Any) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"model": {"w": self.w.detach().clone()}, "local": {"calls": self.calls}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w.data.copy_(state["model"]["w"])
        self.calls = state["local"]["calls"]

    def train(self, mode: bool = True) -> None:
        pass


class Four:
    steps_per_epoch = 4

    def epoch(self, epoch: int, start: int):
        return range(start, self.steps_per_epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "four"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@pytest.fixture
def written(tmp_path):
    """A real checkpoint of the loop: 2 epochs of 4 steps."""
    step = Line()
    run = RunFolder(tmp_path / "run", {"lr": 0.1}).open()
    fit(step, Four(), torch.optim.SGD([step.w], lr=0.1), FitOptions(epochs=2, progress=False), run=run)
    return tmp_path / "run" / "checkpoint.pt", step


def test_the_accessors_read_what_the_loop_wrote(written):
    path, step = written
    state = ckpt.read_checkpoint(path, need=ckpt.REQUIRED)
    assert state["layout"] == ckpt.LAYOUT and state["version"] == __version__
    assert torch.equal(ckpt.model_state(state)["w"], step.w.detach())
    assert ckpt.local_state(state) == {"calls": 8}
    assert ckpt.step_state(state)["local"] == {"calls": 8}
    assert ckpt.batches_state(state) == {"kind": "four"}
    assert ckpt.config_of(state) == {"lr": 0.1}
    assert "state" in ckpt.optimizer_state(state) and ckpt.random_state(state)
    loop = ckpt.loop_state(state)
    assert set(ckpt.LOOP_KEYS) <= set(loop) and loop["epoch"] == 2 and loop["pos"] == 0 and loop["steps"] == 8


def test_the_loop_state_is_the_loop_section_both_ways(tmp_path, monkeypatch):
    """Every loop section the loop writes (2 epochs of 4 steps, a checkpoint every 3 steps too)
    reads back into a LoopState that writes the same section; inside an epoch it holds the
    epoch's running sums, at an epoch's start none."""
    from gedi_core.loop_state import EpochTally, LoopState

    sections: list[dict[str, Any]] = []
    save = RunFolder.save
    monkeypatch.setattr(RunFolder, "save", lambda self, state, rank=0: (sections.append(ckpt.loop_state(state)),
                                                                        save(self, state, rank)))
    step = Line()
    run = RunFolder(tmp_path / "run", {"lr": 0.1}).open()
    fit(step, Four(), torch.optim.SGD([step.w], lr=0.1), FitOptions(epochs=2, ckpt_every=3, progress=False), run=run)
    assert [(s["epoch"], s["pos"], s["steps"]) for s in sections] == [(0, 3, 3), (1, 0, 4), (1, 2, 6), (2, 0, 8)]
    for section in sections:
        state = LoopState.from_section(section)
        assert state.section() == section and set(ckpt.LOOP_KEYS) <= set(section)
        if section["pos"]:
            assert state.tally.count == section["pos"] and state.tally.items == section["pos"]
            assert state.tally.sums["loss"] > 0 and state.tally == EpochTally.from_dict(section["epoch_acc"])
        else:
            assert section["epoch_acc"] is None and state.tally == EpochTally()
    state.next_epoch()
    assert (state.epoch, state.pos, state.tally) == (3, 0, EpochTally())


def test_a_checkpoint_without_a_layout_key_holding_the_current_keys_still_loads(written, tmp_path):
    path, _ = written
    state = ckpt.load_checkpoint(path)
    del state["layout"], state["version"]  # as written before the layout was stored
    save_checkpoint(path, state)
    assert ckpt.layout_of(ckpt.load_checkpoint(path)) == 1
    ckpt.check_layout(ckpt.load_checkpoint(path), path)  # resumable: nothing raised
    assert torch.is_tensor(ckpt.model_state(ckpt.read_checkpoint(path))["w"])


@pytest.mark.parametrize("doctor, found", [
    (lambda s: s.update(layout=99, version="9.9"), "a newer version of this project (gedi 9.9, checkpoint layout 99)"),
    (lambda s: (s.pop("layout"), s["loop"].pop("monitor_seen")),
     "an older version of this project (gedi 0.1.0, checkpoint layout 1; it lacks loop.monitor_seen)"),
])
def test_another_layout_is_one_line_naming_the_layout_found_and_expected(written, doctor, found):
    path, _ = written
    state = ckpt.load_checkpoint(path)
    doctor(state)
    with pytest.raises(GediError) as err:
        ckpt.check_layout(state, path)
    message = str(err.value)
    assert "\n" not in message and found.replace("0.1.0", __version__) in message
    assert message.endswith(f"resumes layout {ckpt.LAYOUT}: choose a fresh --out")


def test_a_reader_names_the_layout_and_the_missing_section(tmp_path):
    path = tmp_path / "old.pt"
    save_checkpoint(path, {"model": {"w": torch.zeros(1)}, "loop": {"epoch": 1}})  # an older, flat layout
    with pytest.raises(GediError, match=r"checkpoint layout 1; it lacks step\.model\); this version \(.*\) "
                                        r"reads layout 2$"):
        ckpt.read_checkpoint(path)


def test_predict_refuses_an_older_layout_in_one_line(tmp_path):
    from gedi_nesy.predict import run_config

    (tmp_path / "run").mkdir()
    save_checkpoint(tmp_path / "run" / "checkpoint.pt", {"networks": {}, "loop": {"epoch": 1}, "config": {}})
    with pytest.raises(GediError, match=r"checkpoint layout 1; it lacks step\.model\)"):
        run_config(tmp_path / "run")


def test_extra_state_is_what_get_extra_state_returned():
    class Kept(torch.nn.Module):
        def get_extra_state(self) -> dict[str, int]:
            return {"calls": 3}

        def set_extra_state(self, state: dict[str, int]) -> None:
            pass

    assert ckpt.extra_state(Kept().state_dict()) == {"calls": 3}
    assert ckpt.extra_state(torch.nn.Linear(1, 1).state_dict()) == {}


def test_another_rank_keeps_its_own_local_state_over_rank_0s():
    shared = ckpt.training_state({"model": {"w": 1}, "local": {"r": 0}}, {}, {}, {"seed": 0}, {})
    own = ckpt.rank_state({"model": {"w": 1}, "local": {"r": 1}}, {"seed": 1})
    merged = ckpt.merge_rank(shared, own)
    assert merged["step"] == {"model": {"w": 1}, "local": {"r": 1}} and ckpt.random_state(merged) == {"seed": 1}
