import pytest
import torch
from lrpc.models.testing import randomize_batchnorm  # noqa: F401 - tests import it from here

torch.set_num_threads(2)


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)
