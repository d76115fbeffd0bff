"""Shared test settings. Doctests of ``miniprob/`` run with the tests, each from a clean state.

Hypothesis: no per-example deadline (a loaded 2-core machine makes timings meaningless), and
under CI (``CI`` set) the examples are derandomized, so a CI run is repeatable.
"""

import os

import pytest
import torch
from hypothesis import settings

import miniprob

settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# Small ops stall when two intra-op threads contend for 2 cores; the suite is many small ops.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_miniprob_state(doctest_namespace):
    miniprob.clear_param_store()
    miniprob.enable_validation(True)
    yield
    miniprob.clear_param_store()
