"""The benchmark floors compute what Pyro computes: under one seed, a few steps of each
hand-written PyTorch step reach Pyro's parameters (and miniprob's, bitwise)."""

import sys
from pathlib import Path

import pytest
import torch

import miniprob

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import models  # noqa: E402

STEPS = 4


def svi_params(lib, name):
    build, kwargs, _ = models.BENCHMARKS[name]
    lib.clear_param_store()
    problem = build(lib, **kwargs)
    elbo = lib.infer.Trace_ELBO(**problem.elbo_kwargs)
    svi = lib.infer.SVI(problem.model, problem.guide, lib.optim.Adam({"lr": models.LR}), elbo)
    torch.manual_seed(0)
    losses = [svi.step(*problem.args) for _ in range(STEPS)]
    store = lib.get_param_store()
    return losses, {k: store[k].detach().clone() for k in store.keys()}


def floor_params(name):
    build, kwargs, make_floor = models.BENCHMARKS[name]
    floor = make_floor(build(miniprob, **kwargs).args)
    torch.manual_seed(0)
    losses = [floor.step() for _ in range(STEPS)]
    return losses, floor.params()


def assert_floor_matches(pyro, floor):
    """The floor's ``(losses, params)`` are Pyro's, up to rounding: the summation order differs
    (Pyro adds site by site, the floor as it is written). Callers compute Pyro's first."""
    floor_losses, params = floor
    pyro_losses, pyro_params = pyro
    assert params.keys() == pyro_params.keys()
    for key, value in pyro_params.items():
        torch.testing.assert_close(params[key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert floor_losses == pytest.approx(pyro_losses, rel=1e-5)


@pytest.mark.parametrize("name", list(models.BENCHMARKS))
def test_floor_reaches_pyros_parameters(name, pyro_ref):
    assert_floor_matches(svi_params(pyro_ref, name), floor_params(name))


@pytest.mark.parametrize("name", list(models.BENCHMARKS))
def test_miniprob_matches_pyro_on_the_benchmarks(name, pyro_ref):
    pyro_losses, pyro_params = svi_params(pyro_ref, name)
    losses, params = svi_params(miniprob, name)
    for key, value in pyro_params.items():
        if "p10_loop" in name:  # Pyro backpropagates particle by particle, miniprob once
            torch.testing.assert_close(params[key], value, rtol=1e-6, atol=1e-7, msg=key)
        else:
            assert torch.equal(params[key], value), key
    assert losses == pytest.approx(pyro_losses, rel=1e-5)


def test_per_site_floor_matches_pyro(pyro_ref):
    pyro_ref.clear_param_store()
    problem = models.sites(pyro_ref, 5)
    svi = pyro_ref.infer.SVI(
        problem.model,
        problem.guide,
        pyro_ref.optim.Adam({"lr": models.LR}),
        pyro_ref.infer.Trace_ELBO(),
    )
    torch.manual_seed(0)
    for _ in range(STEPS):
        svi.step()
    floor = models.sites_floor(5)
    torch.manual_seed(0)
    for _ in range(STEPS):
        floor.step()
    store = pyro_ref.get_param_store()
    for key, value in floor.params().items():
        torch.testing.assert_close(value, store[key].detach(), rtol=1e-5, atol=1e-6, msg=key)
