"""Exactness of enumeration: on random small plated models, ``TraceEnum_ELBO`` equals the ELBO
computed by brute force over every joint assignment of the discrete variables; ``markov``
reuses dims; ``infer_discrete`` samples from the exact posterior.
"""

import itertools
import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import miniprob as pyro
import miniprob.distributions as dist
from miniprob import poutine
from miniprob.infer import TraceEnum_ELBO, config_enumerate, infer_discrete


def random_tables(seed, k0, k1, k2, n, m):
    gen = torch.Generator().manual_seed(seed)

    def simplex(*shape):
        return (3 * torch.rand(*shape, generator=gen)).softmax(-1)

    return {
        "p0": simplex(k0),
        "q0": simplex(k0),
        "t1": simplex(k0, k1),
        "t2": simplex(k1, k2),
        "mu1": torch.randn(k1, generator=gen),
        "mu2": torch.randn(k2, generator=gen),
        "x1": torch.randn(n, 1, generator=gen),
        "x2": torch.randn(n, m, generator=gen),
    }


def build(tab, nested, z0_in_guide, how="parallel"):
    n, m = tab["x2"].shape

    def model():
        z0 = pyro.sample("z0", dist.Categorical(tab["p0"]))
        with pyro.plate("outer", n, dim=-2):
            z1 = pyro.sample("z1", dist.Categorical(tab["t1"][z0]))
            pyro.sample("x1", dist.Normal(tab["mu1"][z1], 1.0), obs=tab["x1"])
            if nested:
                with pyro.plate("inner", m, dim=-1):
                    z2 = pyro.sample("z2", dist.Categorical(tab["t2"][z1]))
                    pyro.sample("x2", dist.Normal(tab["mu2"][z2], 1.0), obs=tab["x2"])

    def guide():
        if z0_in_guide:
            pyro.sample("z0", dist.Categorical(tab["q0"]), infer={"enumerate": how})

    return config_enumerate(model), guide


def normal_lp(x, loc):
    return -0.5 * (x - loc) ** 2 - 0.5 * math.log(2 * math.pi)


def brute_force_elbo(tab, nested, z0_in_guide):
    """The ELBO by summing over every joint assignment, in float64 Python arithmetic."""
    p0, q0 = tab["p0"].tolist(), tab["q0"].tolist()
    t1, t2 = tab["t1"].tolist(), tab["t2"].tolist()
    mu1, mu2 = tab["mu1"].tolist(), tab["mu2"].tolist()
    x1, x2 = tab["x1"].tolist(), tab["x2"].tolist()
    n, m = len(x2), len(x2[0])
    k1, k2 = len(mu1), len(mu2)

    def log_joint_given(z0):
        # log sum over z1, z2 of p(z1, z2, x | z0), enumerated jointly over all plate elements
        terms = []
        inner_sites = [(i, j) for i in range(n) for j in range(m)] if nested else []
        for z1 in itertools.product(range(k1), repeat=n):
            for z2 in itertools.product(range(k2), repeat=len(inner_sites)):
                lp = 0.0
                for i in range(n):
                    lp += math.log(t1[z0][z1[i]]) + normal_lp(x1[i][0], mu1[z1[i]])
                for (i, j), v in zip(inner_sites, z2, strict=True):
                    lp += math.log(t2[z1[i]][v]) + normal_lp(x2[i][j], mu2[v])
                terms.append(lp)
        top = max(terms)
        return top + math.log(sum(math.exp(t - top) for t in terms))

    per_z0 = [math.log(p0[z0]) + log_joint_given(z0) for z0 in range(len(p0))]
    if z0_in_guide:
        return sum(q * (lp - math.log(q)) for q, lp in zip(q0, per_z0, strict=True))
    top = max(per_z0)
    return top + math.log(sum(math.exp(t - top) for t in per_z0))


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k0=st.integers(2, 3),
    k1=st.integers(2, 3),
    k2=st.integers(2, 3),
    n=st.integers(1, 2),
    m=st.integers(1, 2),
    nested=st.booleans(),
    z0_in_guide=st.booleans(),
    how=st.sampled_from(["parallel", "sequential"]),
)
def test_enumerated_elbo_equals_brute_force(seed, k0, k1, k2, n, m, nested, z0_in_guide, how):
    """Global z0 (in the model, or in the guide, in parallel or one run per value), z1 per
    outer element, z2 per inner element when nested."""
    tab = random_tables(seed, k0, k1, k2, n, m)
    model, guide = build(tab, nested, z0_in_guide, how)
    loss = TraceEnum_ELBO(max_plate_nesting=2).loss(model, guide)
    expected = brute_force_elbo(tab, nested, z0_in_guide)
    assert math.isclose(-loss, expected, rel_tol=1e-5, abs_tol=1e-4)


def hmm(length):
    trans = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    data = torch.randn(length)

    @config_enumerate
    def model():
        x = 0
        for t in pyro.markov(range(length)):
            x = pyro.sample(f"x_{t}", dist.Categorical(trans[x]))
            pyro.sample(f"y_{t}", dist.Normal(x * 2.0, 1.0), obs=data[t])

    return model


def test_markov_chain_reuses_two_dims():
    with poutine.enum(first_available_dim=-1) as e:
        hmm(30)()
    dims = {d for site in e.site_dims.values() for d in site}
    assert dims == {-1, -2}


def test_markov_chain_equals_chain_without_markov():
    """Reusing dims changes nothing: the loss equals the one with a dim per step."""
    pyro.set_rng_seed(0)
    model = hmm(6)
    with_markov = TraceEnum_ELBO(max_plate_nesting=0).loss(model, lambda: None)
    trans = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    pyro.set_rng_seed(0)
    data = torch.randn(6)

    @config_enumerate
    def flat_model():
        x = 0
        for t in range(6):
            x = pyro.sample(f"x_{t}", dist.Categorical(trans[x]))
            pyro.sample(f"y_{t}", dist.Normal(x * 2.0, 1.0), obs=data[t])

    without = TraceEnum_ELBO(max_plate_nesting=0).loss(flat_model, lambda: None)
    assert math.isclose(with_markov, without, rel_tol=1e-6)


def test_infer_discrete_samples_the_exact_posterior():
    """Each of 4000 independent copies draws from p(z | x); the frequencies match it."""
    probs = torch.tensor([0.2, 0.5, 0.3])
    locs = torch.tensor([-1.0, 0.0, 1.0])
    x = torch.tensor(0.4)
    posterior = (probs.log() + dist.Normal(locs, 1.0).log_prob(x)).softmax(-1)

    @config_enumerate
    def model():
        with pyro.plate("copies", 4000):
            z = pyro.sample("z", dist.Categorical(probs))
            pyro.sample("x", dist.Normal(locs[z], 1.0), obs=x.expand(4000))
        return z

    pyro.set_rng_seed(1)
    z = infer_discrete(model, first_available_dim=-2, temperature=1)()
    freq = torch.bincount(z, minlength=3) / 4000.0
    torch.testing.assert_close(freq, posterior, atol=0.03, rtol=0)


def test_infer_discrete_map_of_a_one_hot_site():
    """A value with an event dim (Pyro's infer_discrete rejects this one)."""
    locs = torch.tensor([0.0, 1.0, 2.0])
    data = torch.tensor([0.1, 2.3, 1.1])

    def model():
        with pyro.plate("data", 3):
            z = pyro.sample(
                "z", dist.OneHotCategorical(torch.ones(3) / 3), infer={"enumerate": "parallel"}
            )
            pyro.sample("x", dist.Normal((z * locs).sum(-1), 1.0), obs=data)
        return z

    z = infer_discrete(model, first_available_dim=-2, temperature=0)()
    assert torch.equal(z, torch.eye(3)[torch.tensor([0, 2, 1])])


def test_a_guide_that_turns_sequential_later_is_enumerated():
    """The queue is skipped for a guide that showed no sequential site; when one appears, the
    step is redone with it."""
    probs = torch.tensor([0.2, 0.5, 0.3])
    flag = {"sequential": False}

    def model():
        c = pyro.sample("c", dist.Categorical(probs))
        pyro.sample("x", dist.Normal(c.float(), 1.0), obs=torch.tensor(1.4))

    def guide():
        how = "sequential" if flag["sequential"] else "parallel"
        pyro.sample("c", dist.Categorical(torch.ones(3) / 3), infer={"enumerate": how})

    elbo = TraceEnum_ELBO(max_plate_nesting=0)
    parallel = elbo.loss(model, guide)
    flag["sequential"] = True
    assert math.isclose(elbo.loss(model, guide), parallel, rel_tol=1e-6)
    fresh = TraceEnum_ELBO(max_plate_nesting=0).loss(model, guide)
    assert math.isclose(fresh, parallel, rel_tol=1e-6)


def test_markov_as_a_recursive_decorator_equals_the_iterator():
    """``@pyro.markov`` on a recursive step re-enters one context per level, as the iterator
    does per step: the same dims, the same loss."""
    trans = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    data = torch.tensor([0.3, 1.9, 2.2, -0.1, 0.8, 2.5])

    @pyro.markov
    def step(t, x):
        if t == len(data):
            return
        x = pyro.sample(f"x_{t}", dist.Categorical(trans[x]), infer={"enumerate": "parallel"})
        pyro.sample(f"y_{t}", dist.Normal(x * 2.0, 1.0), obs=data[t])
        step(t + 1, x)

    def iterated():
        x = 0
        for t in pyro.markov(range(len(data))):
            x = pyro.sample(f"x_{t}", dist.Categorical(trans[x]), infer={"enumerate": "parallel"})
            pyro.sample(f"y_{t}", dist.Normal(x * 2.0, 1.0), obs=data[t])

    with poutine.enum(first_available_dim=-1) as e:
        step(0, 0)
    assert {d for site in e.site_dims.values() for d in site} == {-1, -2}
    elbo = TraceEnum_ELBO(max_plate_nesting=0)
    recursive = elbo.loss(lambda: step(0, 0), lambda: None)
    assert math.isclose(recursive, elbo.loss(iterated, lambda: None), rel_tol=1e-6)


def test_sample_posterior_draws_from_the_exact_posterior():
    probs = torch.tensor([0.2, 0.5, 0.3])
    locs = torch.tensor([-1.0, 0.0, 1.0])
    x = torch.tensor(-0.6)
    posterior = (probs.log() + dist.Normal(locs, 1.0).log_prob(x)).softmax(-1)

    @config_enumerate
    def model():
        with pyro.plate("copies", 4000):
            z = pyro.sample("z", dist.Categorical(probs))
            pyro.sample("x", dist.Normal(locs[z], 1.0), obs=x.expand(4000))
        return z

    pyro.set_rng_seed(2)
    z = TraceEnum_ELBO(max_plate_nesting=1).sample_posterior(model, lambda: None)
    freq = torch.bincount(z, minlength=3) / 4000.0
    torch.testing.assert_close(freq, posterior, atol=0.03, rtol=0)
