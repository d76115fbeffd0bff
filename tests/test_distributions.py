"""Distributions: torch subclasses with Pyro's shape helpers, MaskedDistribution, Delta, and
the checks at sample sites."""

import math

import pytest
import torch
import torch.distributions as td
from hypothesis import given, settings
from hypothesis import strategies as st

import miniprob as mp
import miniprob.distributions as dist
from miniprob.distributions import Delta, MaskedDistribution, kl_divergence
from miniprob.poutine import trace


def torch_distribution_classes():
    skip = (td.Distribution, td.ExponentialFamily)
    return [
        name
        for name in td.__all__
        if isinstance(getattr(td, name), type)
        and issubclass(getattr(td, name), td.Distribution)
        and getattr(td, name) not in skip
    ]


@pytest.mark.parametrize("name", torch_distribution_classes())
def test_every_wrapped_class_is_a_subclass_of_its_torch_class(name):
    wrapped = getattr(dist, name)
    assert issubclass(wrapped, getattr(td, name))
    for helper in ("to_event", "expand_by", "mask"):
        assert callable(getattr(wrapped, helper))


EXAMPLES = [
    lambda: dist.Normal(torch.zeros(2), 1.0),
    lambda: dist.Bernoulli(probs=torch.full((2,), 0.3)),
    lambda: dist.Gamma(torch.ones(2), 2.0),
    lambda: dist.Dirichlet(torch.ones(2, 3)),
    lambda: dist.Categorical(logits=torch.zeros(2, 4)),
    lambda: dist.MultivariateNormal(torch.zeros(2, 3), torch.eye(3)),
    lambda: dist.LogNormal(torch.zeros(2), 1.0),
    lambda: dist.Beta(torch.ones(2), 3.0),
]


@pytest.mark.parametrize("make", EXAMPLES)
def test_expand_keeps_the_wrapped_class_and_its_log_prob(make):
    d = make()
    e = d.expand((5, 2))
    assert type(e) is type(d) and e.batch_shape == (5, 2) and e.event_shape == d.event_shape
    x = e.sample()
    assert x.shape == (5, 2) + d.event_shape
    torch.testing.assert_close(e.log_prob(x), d.log_prob(x))
    assert d.expand_by([4]).batch_shape == (4, 2)
    assert e.to_event(1).event_shape == (2,) + d.event_shape


def test_to_event_shapes_and_log_prob():
    base = dist.Normal(torch.zeros(2, 3), torch.ones(2, 3))
    one = base.to_event(1)
    assert isinstance(one, td.Independent) and isinstance(one, dist.Independent)
    assert (one.batch_shape, one.event_shape) == ((2,), (3,))
    x = torch.randn(2, 3)
    torch.testing.assert_close(one.log_prob(x), base.log_prob(x).sum(-1))
    every = base.to_event()
    assert (every.batch_shape, every.event_shape) == ((), (2, 3))
    assert base.to_event(0) is base


def test_to_event_merges_instead_of_nesting():
    base = dist.Normal(torch.zeros(4, 2, 3), 1.0)
    two = base.to_event(1).to_event(1)
    assert type(two) is dist.Independent and two.base_dist is base
    assert two.reinterpreted_batch_ndims == 2
    back = two.to_event(-1)
    assert back.reinterpreted_batch_ndims == 1 and back.base_dist is base
    assert two.to_event(-2) is base
    with pytest.raises(ValueError):
        two.to_event(-3)
    with pytest.raises(ValueError):
        base.to_event(-1)


def test_mask_shapes_and_log_probs():
    base = dist.Normal(torch.zeros(3), 1.0)
    x = torch.tensor([0.5, -1.0, 2.0])
    m = torch.tensor([True, False, True])
    masked = base.mask(m)
    assert isinstance(masked, MaskedDistribution)
    torch.testing.assert_close(masked.log_prob(x), torch.where(m, base.log_prob(x), 0.0))
    assert base.mask(True) is base
    torch.testing.assert_close(base.mask(False).log_prob(x), torch.zeros(3))
    wide = base.mask(torch.tensor([[True], [False]]))
    assert wide.batch_shape == (2, 3)
    assert wide.log_prob(x)[1].eq(0).all()
    assert masked.expand((4, 3)).batch_shape == (4, 3)
    assert masked.to_event(1).log_prob(x).item() == pytest.approx(base.log_prob(x)[m].sum().item())
    with pytest.raises(ValueError, match="bool"):
        base.mask(torch.tensor([1.0, 0.0, 1.0]))


def test_masked_distribution_forwards_to_its_base():
    base = dist.Normal(torch.zeros(2), 2.0)
    masked = base.mask(torch.tensor([True, False]))
    assert masked.has_rsample and masked.support is base.support
    torch.testing.assert_close(masked.mean, base.mean)
    torch.testing.assert_close(masked.variance, base.variance)
    mp.set_rng_seed(0)
    a = masked.rsample()
    mp.set_rng_seed(0)
    torch.testing.assert_close(a, base.rsample())
    cat = dist.Categorical(logits=torch.zeros(3)).mask(False)
    assert not cat.has_rsample and cat.has_enumerate_support
    assert cat.enumerate_support().tolist() == [0, 1, 2]


def test_helpers_match_pyro(pyro_ref):
    import pyro.distributions as pdist

    def shapes(dist):
        base = dist.Normal(torch.zeros(2, 3), torch.ones(2, 3))
        cases = [
            base.to_event(1),
            base.to_event(),
            base.expand_by([4]),
            base.expand((5, 2, 3)).to_event(2),
            base.mask(torch.tensor([True, False, True])),
            base.mask(torch.tensor([[True], [False]])).to_event(1),
            dist.Delta(torch.ones(2, 3), event_dim=1),
            dist.Delta(torch.ones(2, 3), torch.tensor([0.5, 1.5]), event_dim=1).expand_by([2]),
        ]
        x = torch.ones(2, 3)
        return [(d.batch_shape, d.event_shape, d.log_prob(x)) for d in cases]

    for (pb, pe, plp), (mb, me, mlp) in zip(shapes(pdist), shapes(dist), strict=True):
        assert (mb, me) == (pb, pe)
        torch.testing.assert_close(mlp, plp)


# ---- Delta ------------------------------------------------------------------------------------


def test_delta():
    v = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    d = Delta(v, log_density=0.5, event_dim=1)
    assert (d.batch_shape, d.event_shape) == ((2,), (2,))
    assert d.has_rsample and torch.equal(d.sample(), v) and torch.equal(d.rsample(), v)
    assert d.sample((3,)).shape == (3, 2, 2)
    assert d.log_prob(v).tolist() == [0.5, 0.5]
    assert d.log_prob(torch.tensor([[1.0, 2.0], [3.0, 5.0]])).tolist() == [0.5, float("-inf")]
    assert torch.equal(d.mean, v) and d.variance.eq(0).all()
    e = d.expand((4, 2))
    assert (e.batch_shape, e.event_shape) == ((4, 2), (2,))
    assert e.log_prob(v).shape == (4, 2)
    assert Delta(torch.tensor(3.0)).log_prob(torch.tensor(3.0)).item() == 0.0
    with pytest.raises(ValueError, match="event_dim"):
        Delta(torch.zeros(2), event_dim=2)


def test_delta_rsample_carries_gradients():
    v = torch.tensor([1.0, 2.0], requires_grad=True)
    Delta(v).rsample().sum().backward()
    assert v.grad.tolist() == [1.0, 1.0]


# ---- at sample sites --------------------------------------------------------------------------


def test_plain_torch_distributions_at_sample_sites():
    mp.set_rng_seed(1)
    x = mp.sample("x", td.Normal(0.0, 1.0))
    mp.set_rng_seed(1)
    assert torch.equal(x, td.Normal(0.0, 1.0).sample())
    with trace() as tr, mp.plate("data", 4):
        y = mp.sample("y", td.Normal(0.0, 1.0))
        mp.sample("z", td.Independent(td.Normal(torch.zeros(2), 1.0), 1))
        mp.sample("obs", td.Poisson(3.0), obs=torch.tensor([1.0, 0.0, 2.0, 5.0]))
    assert y.shape == (4,) and tr.trace.nodes["z"]["value"].shape == (4, 2)
    expected = (
        td.Normal(0.0, 1.0).log_prob(y).sum()
        + td.Normal(0.0, 1.0).log_prob(tr.trace.nodes["z"]["value"]).sum()
        + td.Poisson(3.0).log_prob(torch.tensor([1.0, 0.0, 2.0, 5.0])).sum()
    )
    torch.testing.assert_close(tr.trace.log_prob_sum(), expected)


@pytest.mark.parametrize("bad", [3.0, torch.tensor(1.0), lambda: torch.tensor(1.0), "Normal"])
def test_a_non_distribution_at_a_sample_site_names_the_site(bad):
    with pytest.raises(TypeError, match="'site_x'"):
        mp.sample("site_x", bad)
    with pytest.raises(TypeError, match="'site_x'"), trace():
        mp.sample("site_x", bad)


@pytest.mark.parametrize(
    "make, value",
    [
        (lambda: dist.Bernoulli(0.5), torch.tensor(2.0)),
        (lambda: dist.Beta(2.0, 2.0), torch.tensor([0.5, 1.5])),
        (lambda: dist.Poisson(3.0), torch.tensor(-1.0)),
        (lambda: dist.Gamma(2.0, 1.0).to_event(0), torch.tensor(-0.1)),
        (lambda: dist.Dirichlet(torch.ones(3)), torch.tensor([0.5, 0.6, 0.1])),
        (lambda: dist.Normal(torch.zeros(2), 1.0).to_event(1).mask(False), torch.zeros(2)),
    ],
)
def test_an_observed_value_outside_the_support_names_the_site(make, value):
    if make().support.check(value).all():  # inside after all: nothing to reject
        mp.sample("obs_site", make(), obs=value)
        return
    with pytest.raises(ValueError, match="'obs_site'"):
        mp.sample("obs_site", make(), obs=value)
    with trace() as tracer, mp.plate("p", 1):
        mp.sample("obs_site", make(), obs=value)  # recorded unchecked, as in Pyro
    with pytest.raises(ValueError, match="'obs_site'"):
        tracer.trace.compute_log_prob()
    mp.enable_validation(False)
    mp.sample("obs_site", make(), obs=value)


def test_a_checked_value_is_checked_again_for_another_distribution():
    value = torch.tensor(0.5)
    mp.sample("o", dist.Normal(0.0, 1.0), obs=value)
    with pytest.raises(ValueError, match="'o'"):
        mp.sample("o", dist.Poisson(1.0), obs=value)
    value.fill_(-0.5)  # changed in place: checked again
    with pytest.raises(ValueError, match="'o'"):
        mp.sample("o", dist.Beta(1.0, 1.0), obs=value)


# ---- kl_divergence ----------------------------------------------------------------------------


def normals():
    torch.manual_seed(0)
    p = dist.Normal(torch.randn(2, 3), torch.rand(2, 3) + 0.5)
    q = dist.Normal(torch.randn(2, 3), torch.rand(2, 3) + 0.5)
    return p, q, td.kl_divergence(td.Normal(p.loc, p.scale), td.Normal(q.loc, q.scale))


def test_kl_through_independent():
    p, q, kl = normals()
    torch.testing.assert_close(kl_divergence(p.to_event(1), q.to_event(1)), kl.sum(-1))
    torch.testing.assert_close(kl_divergence(p.to_event(2), q.to_event(2)), kl.sum())


def test_kl_through_masked_distributions():
    """Only Masked || Masked has a closed form, as in Pyro (a masked guide against an unmasked
    prior falls back to Monte Carlo in TraceMeanField_ELBO)."""
    p, q, kl = normals()
    m1 = torch.tensor([True, False, True])
    m2 = torch.tensor([[True], [False]])
    torch.testing.assert_close(kl_divergence(p.mask(m1), q.mask(m2)), torch.where(m1 & m2, kl, 0.0))
    with pytest.raises(NotImplementedError):
        kl_divergence(p.mask(m1), q)
    with pytest.raises(NotImplementedError):
        kl_divergence(p.mask(m1).to_event(1), q.to_event(1))


def test_masked_kl_matches_pyro(pyro_ref):
    import pyro.distributions as pdist

    def kl(dist):  # both libraries register their KLs with torch's kl_divergence
        torch.manual_seed(0)
        p = dist.Normal(torch.randn(2, 3), 1.5)
        q = dist.Normal(torch.randn(2, 3), 0.7)
        m1 = torch.tensor([True, False, True])
        m2 = torch.tensor([[True], [False]])
        return [
            td.kl_divergence(p.mask(m1), q.mask(m2)),
            td.kl_divergence(p.mask(m1), q.mask(m1)),
            td.kl_divergence(p.to_event(1), q.to_event(1)),
        ]

    for expected, actual in zip(kl(pdist), kl(dist), strict=True):
        torch.testing.assert_close(actual, expected)


@settings(max_examples=200)
@given(
    st.lists(
        st.sampled_from([0.0, 1.0, -0.0, 0.5, -0.5, 1.5, 2.0, -1.0, 1e-30, math.nan, math.inf]),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from([torch.float32, torch.float64, torch.float16]),
)
def test_the_boolean_support_check_agrees_with_torchs(values, dtype):
    value = torch.tensor(values, dtype=dtype)
    inside = bool(td.constraints.boolean.check(value).all())
    with trace() as tracer:
        mp.sample("b", dist.Bernoulli(0.5), obs=value)
    if inside:
        tracer.trace.compute_log_prob()
    else:
        with pytest.raises(ValueError, match="'b'.*Boolean"):
            tracer.trace.compute_log_prob()


def test_event_dim_and_shape_as_in_pyro(pyro_ref):
    import pyro.distributions as pdist

    for lib in (dist, pdist):
        d = lib.Normal(torch.zeros(3), 1.0).to_event(1).expand_by([2])
        assert d.event_dim == 1 and d.shape((4,)) == (4, 2, 3)
        assert lib.Delta(torch.zeros(2, 3), event_dim=1).event_dim == 1
        assert lib.Normal(0.0, 1.0).mask(False).shape() == ()
