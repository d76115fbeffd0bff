"""Predictive: prior and posterior predictive draws, sequential and parallel, return sites."""

import pytest
import torch

import miniprob as pyro
import miniprob.distributions as dist
from miniprob.infer import SVI, Predictive, Trace_ELBO
from miniprob.optim import Adam

N = 5


def model(data=None):
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 0.3))
    with pyro.plate("data", N):
        z = pyro.sample("z", dist.Normal(loc, 1.0))
        obs = pyro.sample("obs", dist.Normal(z, scale), obs=data)
    return obs.sum(-1)


def guide(data=None):
    m = pyro.param("m", torch.tensor(3.0))
    pyro.sample("loc", dist.Normal(m, 0.01))
    pyro.sample("scale", dist.LogNormal(0.0, 0.01))
    zm = pyro.param("zm", torch.arange(N, dtype=torch.float32))
    with pyro.plate("data", N):
        pyro.sample("z", dist.Normal(zm, 0.01))


@pytest.fixture(params=[False, True], ids=["sequential", "parallel"])
def parallel(request):
    return request.param


def test_prior_predictive_draws_every_sample_site(parallel):
    samples = Predictive(model, num_samples=7, parallel=parallel)()
    assert sorted(samples) == ["loc", "obs", "scale", "z"]
    assert samples["loc"].shape == (7, 1) and samples["scale"].shape == (7, 1)
    assert samples["z"].shape == (7, N) and samples["obs"].shape == (7, N)
    assert not any(value.requires_grad for value in samples.values())


def test_posterior_samples_condition_the_model(parallel):
    loc = torch.tensor([-10.0, 0.0, 10.0])
    scale = torch.full((3,), 1e-3)

    def tight(data=None):
        mu = pyro.sample("loc", dist.Normal(0.0, 1.0))
        sd = pyro.sample("scale", dist.LogNormal(0.0, 0.3))
        with pyro.plate("data", N):
            pyro.sample("obs", dist.Normal(mu, sd), obs=data)

    samples = Predictive(tight, {"loc": loc, "scale": scale}, parallel=parallel)()
    assert sorted(samples) == ["obs"]  # sites in posterior_samples are not returned by default
    assert samples["obs"].shape == (3, N)
    torch.testing.assert_close(samples["obs"], loc[:, None].expand(3, N), atol=0.01, rtol=0)


def test_posterior_samples_of_a_plate_latent(parallel):
    z = torch.arange(2 * N, dtype=torch.float32).reshape(2, N)
    samples = Predictive(model, {"z": z, "scale": torch.full((2,), 1e-4)}, parallel=parallel)()
    assert sorted(samples) == ["loc", "obs"]
    torch.testing.assert_close(samples["obs"], z, atol=1e-2, rtol=0)


def test_guide_draws_the_latents_and_all_sites_are_returned(parallel):
    samples = Predictive(model, guide=guide, num_samples=4, parallel=parallel)()
    assert sorted(samples) == ["loc", "obs", "scale", "z"]
    torch.testing.assert_close(samples["loc"], torch.full((4, 1), 3.0), atol=0.1, rtol=0)
    torch.testing.assert_close(samples["z"], torch.arange(N).float().expand(4, N), atol=0.1, rtol=0)


def test_return_sites_select_sites_and_the_return_value(parallel):
    predictive = Predictive(
        model, guide=guide, num_samples=6, return_sites=("obs", "_RETURN"), parallel=parallel
    )
    samples = predictive()
    assert sorted(samples) == ["_RETURN", "obs"]
    assert samples["_RETURN"].shape == (6,)
    torch.testing.assert_close(samples["_RETURN"], samples["obs"].sum(-1))


def test_observed_data_is_returned_as_given(parallel):
    data = torch.linspace(-1.0, 1.0, N)
    samples = Predictive(model, num_samples=3, return_sites=("obs",), parallel=parallel)(data)
    assert torch.equal(samples["obs"], data.expand(3, N))


def test_a_fitted_guide_predicts_the_posterior():
    """After SVI on a conjugate Normal model, predictive draws of the latent follow the guide."""
    data = torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0])

    def normal_model(data):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)

    def normal_guide(data):
        m = pyro.param("m", torch.tensor(0.0))
        pyro.sample("loc", dist.Normal(m, 0.1))

    pyro.set_rng_seed(0)
    SVI(normal_model, normal_guide, Adam({"lr": 0.1}), Trace_ELBO()).run(200, data, progress=False)
    samples = Predictive(normal_model, guide=normal_guide, num_samples=500, parallel=True)(data)
    assert samples["loc"].mean().item() == pytest.approx(2.0, abs=0.1)


def test_same_seed_same_draws_and_get_samples_is_call():
    predictive = Predictive(model, guide=guide, num_samples=3)
    pyro.set_rng_seed(1)
    first = predictive()
    pyro.set_rng_seed(1)
    second = predictive.get_samples()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="num_samples"):
        Predictive(model)
    with pytest.raises(ValueError, match="num_samples"):
        Predictive(model, {"loc": torch.zeros(3)}, num_samples=4)
    with pytest.raises(ValueError, match="not both"):
        Predictive(model, {"loc": torch.zeros(3)}, guide=guide)


def test_return_sites_as_a_string_and_num_samples_below_one_are_errors():
    def model():
        pyro.sample("ab", dist.Normal(0.0, 1.0))

    with pytest.raises(TypeError, match="return_sites must be a list"):
        Predictive(model, num_samples=2, return_sites="ab")
    with pytest.raises(ValueError, match="num_samples must be positive"):
        Predictive(model, num_samples=0)
