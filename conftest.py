"""Doctests of ``miniprob/`` run with the tests: each example starts from a clean state."""

import pytest
import torch

import miniprob

# Small ops stall when two intra-op threads contend for 2 cores; the suite is many small ops.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_miniprob_state(doctest_namespace):
    miniprob.clear_param_store()
    miniprob.enable_validation(True)
    yield
    miniprob.clear_param_store()
