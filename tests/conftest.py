"""Shared fixtures: a clean ParamStore, validation on, an empty handler stack, and Pyro as a
reference implementation for differential tests."""

import pytest

import miniprob as mp
from miniprob.runtime import _STACK


@pytest.fixture(autouse=True)
def clean_state():
    """Each test starts and ends with an empty param store, validation on and no handlers."""
    mp.clear_param_store()
    mp.enable_validation(True)
    yield
    mp.clear_param_store()
    mp.enable_validation(True)
    leaked = _STACK.get()
    _STACK.set(())
    assert not leaked, f"handlers left on the stack after the test: {leaked}"


@pytest.fixture
def pyro_ref():
    """The ``pyro`` module (pyro-ppl), with a clean param store; skips when it is absent."""
    pyro = pytest.importorskip("pyro")
    pyro.clear_param_store()
    pyro.enable_validation(True)
    yield pyro
    pyro.clear_param_store()
