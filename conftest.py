"""Doctests of ``miniprob/`` run with the tests: each example starts from a clean state."""

import pytest

import miniprob


@pytest.fixture(autouse=True)
def _fresh_miniprob_state(doctest_namespace):
    miniprob.clear_param_store()
    miniprob.enable_validation(True)
    yield
    miniprob.clear_param_store()
