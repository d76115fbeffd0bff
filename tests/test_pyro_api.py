"""Small pieces of Pyro's API: ``condition`` at top level, ``TorchDistribution``,
``Trace.iter_stochastic_nodes``, ``ParamStore.match`` / ``replace_param``, and ``obs_mask=None``
at sample sites. Differential tests against Pyro where it has the same piece."""

import math

import pytest
import torch

import miniprob as mp
import miniprob.distributions as dist
from miniprob import poutine
from miniprob.distributions import constraints


def custom_normal(base: type) -> type:
    """A Normal written as a user would, on ``base`` (miniprob's or Pyro's TorchDistribution),
    with no ``expand`` of its own."""

    class CustomNormal(base):
        arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
        support = constraints.real
        has_rsample = True

        def __init__(self, loc, scale):
            self.loc, self.scale = torch.broadcast_tensors(torch.as_tensor(loc), scale)
            super().__init__(self.loc.shape)

        def rsample(self, sample_shape=torch.Size()):
            shape = self.shape(sample_shape)
            return self.loc.expand(shape) + self.scale.expand(shape) * torch.randn(shape)

        def log_prob(self, value):
            z = (value - self.loc) / self.scale
            return -0.5 * z**2 - self.scale.log() - 0.5 * math.log(2 * math.pi)

    return CustomNormal


def test_condition_at_top_level(pyro_ref):
    assert mp.condition is poutine.condition
    assert "condition" in mp.__all__
    assert pyro_ref.condition is pyro_ref.poutine.condition

    def model():
        return mp.sample("x", dist.Normal(0.0, 1.0))

    x = torch.tensor(0.25)
    tr = poutine.trace(mp.condition(model, data={"x": x})).get_trace()
    assert tr.nodes["x"]["is_observed"] and tr.nodes["x"]["value"] is x


def test_torch_distribution_is_the_base_of_the_wrapped_classes():
    assert isinstance(dist.Normal(0.0, 1.0), dist.TorchDistribution)
    assert isinstance(dist.Normal(0.0, 1.0), torch.distributions.Normal)
    assert "TorchDistribution" in dist.__all__
    # The wrapped classes keep torch's own expand and arg_constraints.
    assert type(dist.Normal(torch.zeros(2), 1.0).expand([3, 2])) is dist.Normal
    assert set(dist.Normal.arg_constraints) == {"loc", "scale"}


def test_custom_distribution_helpers():
    CustomNormal = custom_normal(dist.TorchDistribution)
    d = CustomNormal(torch.zeros(2), torch.ones(2))
    assert d.event_dim == 0 and d.shape([5]) == (5, 2) and d().shape == (2,)
    e = d.expand_by([3]).to_event(2)
    assert (e.batch_shape, e.event_shape, e.event_dim) == ((), (3, 2), 2)
    x = e.rsample()
    assert x.shape == (3, 2)
    assert torch.allclose(e.log_prob(x), d.log_prob(x).sum())
    m = d.mask(torch.tensor([True, False]))
    assert m.log_prob(torch.zeros(2))[1].item() == 0.0


def test_expanded_custom_distribution_draws_independently_in_place():
    CustomNormal = custom_normal(dist.TorchDistribution)
    loc = torch.arange(6.0).reshape(2, 1, 3) * 10
    d = CustomNormal(loc, torch.ones_like(loc)).expand([5, 2, 4, 3])
    x = d.rsample([7])
    assert x.shape == (7, 5, 2, 4, 3)
    # Each draw sits at its own loc (140 draws each), and the dims grown from size 1 hold
    # independent draws, not copies.
    assert torch.allclose(x.mean((0, 1, 3), keepdim=True)[0], loc, atol=0.5)
    assert not (x[:, :, :, 1:] == x[:, :, :, :1]).any()
    assert not (x[:, 1:] == x[:, :1]).any()
    assert d.log_prob(x).shape == (7, 5, 2, 4, 3)
    assert d.expand([6, 5, 2, 4, 3]).batch_shape == (6, 5, 2, 4, 3)
    with pytest.raises(ValueError, match="cannot expand"):
        d.expand([5, 2, 4, 2])


def _plate_model(sample, plate, CustomNormal):
    def model(x=None):
        loc = torch.tensor([0.5, -1.0])
        with plate("data", 3):
            return sample("x", CustomNormal(loc, torch.ones(2)).to_event(1), obs=x)

    return model


def test_custom_distribution_at_a_site_in_a_plate_as_pyro(pyro_ref):
    ours = _plate_model(mp.sample, mp.plate, custom_normal(dist.TorchDistribution))
    theirs = _plate_model(
        pyro_ref.sample, pyro_ref.plate, custom_normal(pyro_ref.distributions.TorchDistribution)
    )
    x = torch.randn(3, 2)
    tr = poutine.trace(ours).get_trace(x)
    ref = pyro_ref.poutine.trace(theirs).get_trace(x)
    tr.compute_log_prob()
    ref.compute_log_prob()
    for site in ("x",):
        assert tr.nodes[site]["fn"].batch_shape == ref.nodes[site]["fn"].batch_shape == (3,)
        assert tr.nodes[site]["fn"].event_shape == ref.nodes[site]["fn"].event_shape == (2,)
        assert torch.allclose(tr.nodes[site]["log_prob"], ref.nodes[site]["log_prob"])
    assert torch.allclose(tr.log_prob_sum(), ref.log_prob_sum())
    # Unobserved: a draw of the plate's shape, differentiable (rsample), as in Pyro.
    draw = poutine.trace(ours).get_trace().nodes["x"]
    ref_draw = pyro_ref.poutine.trace(theirs).get_trace().nodes["x"]
    assert draw["value"].shape == ref_draw["value"].shape == (3, 2)
    assert draw["fn"].has_rsample and ref_draw["fn"].has_rsample


def _stochastic_model(sample, plate, d):
    def model():
        z = sample("z", d.Normal(0.0, 1.0))
        sample("y", d.Normal(z, 1.0), obs=torch.tensor(0.5))
        with plate("p", 2):
            sample("w", d.Normal(z, 1.0))

    return model


def test_iter_stochastic_nodes_as_pyro(pyro_ref):
    tr = poutine.trace(_stochastic_model(mp.sample, mp.plate, dist)).get_trace()
    ref = pyro_ref.poutine.trace(
        _stochastic_model(pyro_ref.sample, pyro_ref.plate, pyro_ref.distributions)
    ).get_trace()
    names = [name for name, _ in tr.iter_stochastic_nodes()]
    # The plate's index draw is a stochastic site in both.
    assert names == [name for name, _ in ref.iter_stochastic_nodes()] == ["z", "p", "w"]
    assert names == tr.stochastic_nodes
    assert all(site is tr.nodes[name] for name, site in tr.iter_stochastic_nodes())


def _fill(pyro):
    pyro.param("enc.w", torch.tensor([1.0, 2.0]))
    pyro.param("enc.s", torch.tensor(2.0), constraint=constraints.positive)
    pyro.param("dec.w", torch.tensor(3.0))
    pyro.param("xenc", torch.tensor(4.0))


@pytest.mark.parametrize("pattern", ["enc", r"enc\.s", ".*enc", "dec|xenc", "nothing", ""])
def test_match_as_pyro(pyro_ref, pattern):
    _fill(mp)
    _fill(pyro_ref)
    ours = mp.get_param_store().match(pattern)
    theirs = pyro_ref.get_param_store().match(pattern)
    assert list(ours) == list(theirs)
    for name in ours:
        assert torch.equal(ours[name], theirs[name])
    if "enc.s" in ours:  # constrained values, with the handle to the leaf
        store = mp.get_param_store()
        assert ours["enc.s"].unconstrained() is store.unconstrained("enc.s")


def test_replace_param_as_pyro(pyro_ref):
    for pyro in (mp, pyro_ref):
        store = pyro.get_param_store()
        pyro.param("s", torch.tensor(2.0), constraint=constraints.positive)
        pyro.param("w", torch.tensor(1.0))
        with pytest.warns(DeprecationWarning):
            store.replace_param("s", torch.tensor(5.0), store["s"])
        with pytest.warns(DeprecationWarning):
            store.replace_param("w", torch.tensor(-3.0), store["w"])
        assert store["s"].item() == pytest.approx(5.0)
        assert store["w"].item() == -3.0
        assert store["s"].unconstrained().item() == pytest.approx(math.log(5.0))


def test_replace_param_refuses_a_stale_old_value(pyro_ref):
    for pyro in (mp, pyro_ref):
        store = pyro.get_param_store()
        pyro.param("s", torch.tensor(2.0), constraint=constraints.positive)
        stale = store["s"]
        store["s"] = torch.tensor(3.0)
        leaf = store["s"].unconstrained()
        with pytest.warns(DeprecationWarning), pytest.raises(AssertionError):
            store.replace_param("s", torch.tensor(5.0), stale)
        assert store["s"].unconstrained() is leaf  # unchanged
        assert store["s"].item() == pytest.approx(3.0)
    store = mp.get_param_store()
    with pytest.warns(DeprecationWarning), pytest.raises(AssertionError, match="param 's'"):
        store.replace_param("s", torch.tensor(5.0), torch.tensor(3.0))  # not read from store
    with pytest.warns(DeprecationWarning), pytest.raises(KeyError, match="'missing'"):
        store.replace_param("missing", torch.tensor(5.0), store["s"])
    assert list(store.keys()) == ["s"]


def test_replace_param_keeps_the_store_when_the_new_value_is_invalid():
    store = mp.get_param_store()
    old = mp.param("s", torch.tensor(2.0), constraint=constraints.positive)
    leaf = store.unconstrained("s")
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="param 's'"):
        store.replace_param("s", torch.tensor(-1.0), old)
    assert store.unconstrained("s") is leaf and store.param_name(leaf) == "s"


def test_obs_mask_none_is_pyros_default():
    # A given mask splits the site (tests/test_obs_mask.py).
    d = dist.Normal(torch.zeros(3), 1.0)
    obs = torch.zeros(3)
    # None is Pyro's default: accepted, and not passed on to the distribution.
    assert mp.sample("x", d, obs=obs, obs_mask=None) is obs
    with poutine.trace() as tr:
        mp.sample("x", d, obs_mask=None)
    assert tr.trace.nodes["x"]["kwargs"] == {}


def test_every_miniprob_distribution_is_a_torch_distribution(pyro_ref):
    import pyro.distributions as pdist

    from miniprob.distributions.unit import Unit

    for lib in (dist, pdist):  # Pyro's wrappers and point masses are, as are miniprob's
        made = [lib.Normal(0.0, 1.0).mask(False), lib.Delta(torch.zeros(2), event_dim=1)]
        assert all(isinstance(d, lib.TorchDistribution) for d in made)
    # miniprob's wrapped torch classes too (Pyro's Normal only mixes the helpers in).
    assert isinstance(dist.Normal(torch.zeros(2), 1.0).to_event(1), dist.TorchDistribution)
    assert isinstance(dist.Normal(0.0, 1.0), dist.TorchDistribution)
    assert isinstance(Unit(torch.tensor(0.0)), dist.TorchDistribution)
