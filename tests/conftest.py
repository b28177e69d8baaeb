import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Tests run on 2 cores in CI: one intra-op thread keeps them quick and deterministic."""
    torch.set_num_threads(1)
    yield
