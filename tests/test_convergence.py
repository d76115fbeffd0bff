"""SVI converges to conjugate posteriors: Normal-Normal (pathwise, score-function, analytic KL),
Beta-Bernoulli, and independent Bernoulli latents in a plate (score function, Rao-Blackwellized).

Each fit uses a fixed seed, ClippedAdam with a decaying learning rate, and compares the average
of the last iterates with the exact posterior.
"""

import math

import pytest
import torch

import miniprob as pyro
import miniprob.distributions as dist
from miniprob.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from miniprob.optim import ClippedAdam

Y = torch.tensor([2.04, 1.21, 0.63, 3.15, 2.04, 1.06, 1.75, 1.21, 2.37, 0.59])
MU0, SIGMA0, SIGMA = 0.0, 1.0, 1.0
POST_PRECISION = 1 / SIGMA0**2 + len(Y) / SIGMA**2
POST_LOC = (MU0 / SIGMA0**2 + Y.sum().item() / SIGMA**2) / POST_PRECISION
POST_SCALE = POST_PRECISION**-0.5


class NonReparamNormal(dist.Normal):
    has_rsample = False


def fit(model, guide, elbo, steps, names, lr=0.1, lrd=0.99, average_last=50):
    """Run SVI; return each named parameter averaged over the last ``average_last`` steps."""
    pyro.set_rng_seed(0)
    svi = SVI(model, guide, ClippedAdam({"lr": lr, "lrd": lrd}), elbo)
    tail = {name: [] for name in names}
    for step in range(steps):
        svi.step()
        if step >= steps - average_last:
            for name in names:
                tail[name].append(pyro.param(name).detach().clone())
    return {name: torch.stack(values).mean(0) for name, values in tail.items()}


def normal_model():
    loc = pyro.sample("loc", dist.Normal(MU0, SIGMA0))
    with pyro.plate("data", len(Y)):
        pyro.sample("obs", dist.Normal(loc, SIGMA), obs=Y)


def normal_guide(normal=dist.Normal):
    def guide():
        m = pyro.param("m", torch.tensor(0.0))
        s = pyro.param("s", torch.tensor(1.0), constraint=dist.constraints.positive)
        pyro.sample("loc", normal(m, s))

    return guide


@pytest.mark.parametrize(
    "normal, elbo",
    [
        (dist.Normal, Trace_ELBO(num_particles=8, vectorize_particles=True)),
        (dist.Normal, TraceMeanField_ELBO()),
        (NonReparamNormal, Trace_ELBO(num_particles=64, vectorize_particles=True)),
    ],
    ids=["pathwise", "mean_field", "score_function"],
)
def test_normal_normal_posterior(normal, elbo):
    got = fit(normal_model, normal_guide(normal), elbo, steps=300, names=["m", "s"])
    assert got["m"].item() == pytest.approx(POST_LOC, abs=0.1 * 3 * POST_SCALE)
    assert got["s"].item() == pytest.approx(POST_SCALE, rel=0.15)


@pytest.mark.slow
def test_beta_bernoulli_posterior():
    flips = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0])  # 7 of 10
    a_post, b_post = 2.0 + flips.sum().item(), 2.0 + (1 - flips).sum().item()

    def model():
        p = pyro.sample("p", dist.Beta(2.0, 2.0))
        with pyro.plate("flips", len(flips)):
            pyro.sample("obs", dist.Bernoulli(p), obs=flips)

    def guide():
        a = pyro.param("a", torch.tensor(1.0), constraint=dist.constraints.positive)
        b = pyro.param("b", torch.tensor(1.0), constraint=dist.constraints.positive)
        pyro.sample("p", dist.Beta(a, b))

    elbo = Trace_ELBO(num_particles=8, vectorize_particles=True)
    got = fit(model, guide, elbo, steps=400, names=["a", "b"], lrd=0.995)
    a, b = got["a"].item(), got["b"].item()
    mean, mean_post = a / (a + b), a_post / (a_post + b_post)
    sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    sd_post = math.sqrt(a_post * b_post / ((a_post + b_post) ** 2 * (a_post + b_post + 1)))
    assert mean == pytest.approx(mean_post, abs=0.03)
    assert sd == pytest.approx(sd_post, rel=0.2)


@pytest.mark.slow
def test_bernoulli_latents_in_a_plate_reach_their_exact_posteriors():
    """Independent z_i ~ Bernoulli(0.3), y_i ~ Normal(2 z_i, 1): each guide probability must
    reach p(z_i = 1 | y_i); the guide family contains the posterior, so the optimum is exact."""
    y = torch.tensor([1.5, -0.5, 2.5, 0.8])
    like1 = 0.3 * torch.exp(-0.5 * (y - 2.0) ** 2)
    like0 = 0.7 * torch.exp(-0.5 * y**2)
    exact = like1 / (like0 + like1)

    def model():
        with pyro.plate("data", len(y)):
            z = pyro.sample("z", dist.Bernoulli(0.3))
            pyro.sample("obs", dist.Normal(2.0 * z, 1.0), obs=y)

    def guide():
        p = pyro.param("p", torch.full((len(y),), 0.5), constraint=dist.constraints.unit_interval)
        with pyro.plate("data", len(y)):
            pyro.sample("z", dist.Bernoulli(p))

    elbo = Trace_ELBO(num_particles=32, vectorize_particles=True)
    got = fit(model, guide, elbo, steps=300, names=["p"])
    torch.testing.assert_close(got["p"], exact, atol=0.05, rtol=0)
