import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Tests run on 2 cores in CI: one intra-op thread keeps them quick and deterministic."""
    torch.set_num_threads(1)
    yield


@pytest.fixture
def interrupt_after(monkeypatch):
    """``interrupt_after(n)``: the n-th checkpoint a run writes is followed by a KeyboardInterrupt
    (as if the run were killed right after it); the CLIs then exit with status 130."""
    from gedi_core.runfolder import RunFolder

    def arm(n: int) -> None:
        original = RunFolder.save
        count = {"saves": 0}

        def save(self, state, rank=0):
            original(self, state, rank)
            count["saves"] += 1
            if count["saves"] == n:
                monkeypatch.setattr(RunFolder, "save", original)
                raise KeyboardInterrupt

        monkeypatch.setattr(RunFolder, "save", save)

    return arm
