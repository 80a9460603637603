import random

import numpy as np
import pytest
import torch
from lrpc.models.testing import randomize_batchnorm  # noqa: F401 - tests import it from here

# One thread: the suite's tensors are small, and on a two-core machine a second thread mostly spins on
# synchronisation (the whole suite used to run on one thread anyway: test_graph_dump set it when collected).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def seeded_global_generators():
    """Every test starts from the same state of torch's, numpy's and Python's global generators, whatever ran
    before it: a model's random initialisation, an unseeded draw and a library's own noise (Quantus, timm) give
    the same numbers in any test order. Fixtures wider than one test are set up before this one and seed
    themselves."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)
