"""Shared fixtures: a clean ParamStore, validation on, an empty handler stack, Pyro as a
reference implementation for differential tests, and a one-process gloo group."""

import os
from datetime import timedelta

import pytest
import torch.distributed as torch_dist

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


@pytest.fixture
def group_of_one():
    """torch.distributed's default group with this process as its only rank (gloo, loopback)."""
    from miniprob.optim.distributed import _free_port

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch_dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{_free_port()}",
        rank=0,
        world_size=1,
        timeout=timedelta(seconds=30),
    )
    yield
    torch_dist.destroy_process_group()
