"""deferred distributions and Constrained values: the stale-graph bug they fix, training to known
optima, sample sites, and SVI trajectories equal to the same guide written with ``param``."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import miniprob as pyro
import miniprob.distributions as dist
from miniprob import poutine
from miniprob.deferred import Constrained, DeferredDistribution, deferred
from miniprob.distributions import constraints
from miniprob.infer import SVI, Trace_ELBO
from miniprob.optim import Adam

F64 = torch.float64


def normal_data(n=200, loc=2.0, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return loc + scale * torch.randn(n, generator=g, dtype=F64)


# ---- the plain-PyTorch pattern, and why it fails ----------------------------------------------


def test_plain_pytorch_distribution_defined_once_fails_at_second_backward():
    data = normal_data()
    mean = torch.nn.Parameter(torch.zeros((), dtype=F64))
    log_std = torch.nn.Parameter(torch.zeros((), dtype=F64))
    std = torch.exp(log_std)
    normal = torch.distributions.Normal(mean, std)
    (-normal.log_prob(data).mean()).backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        (-normal.log_prob(data).mean()).backward()


def test_plain_pytorch_with_retain_graph_trains_a_stale_scale():
    data = normal_data()
    mean = torch.nn.Parameter(torch.zeros((), dtype=F64))
    log_std = torch.nn.Parameter(torch.zeros((), dtype=F64))
    normal = torch.distributions.Normal(mean, torch.exp(log_std))
    opt = torch.optim.SGD([mean, log_std], lr=0.01)
    grads = []
    for _ in range(100):
        opt.zero_grad()
        (-normal.log_prob(data).mean()).backward(retain_graph=True)
        stale = 1.0 - ((data - mean.detach()) ** 2).mean()  # d loss / d log_std at std = 1
        grads.append((log_std.grad.item(), stale.item()))
        opt.step()
    # log_std moved, but the distribution still uses the scale computed before the loop, and
    # every step gets the gradient for that stale scale std = 1, which never shrinks.
    assert normal.scale.item() == 1.0
    assert math.exp(log_std.item()) > 1.5
    assert all(grad == pytest.approx(stale, rel=1e-12) for grad, stale in grads)
    assert abs(grads[-1][0]) > 5.0


# ---- the deferred version ---------------------------------------------------------------------


def fit(q, data, steps=600, lr=0.05):
    opt = torch.optim.Adam(q.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        (-q.log_prob(data).mean()).backward()
        opt.step()
    return q


def test_deferred_normal_trains_to_the_maximum_likelihood_estimate():
    data = normal_data()
    mean = torch.nn.Parameter(torch.zeros((), dtype=F64))
    log_std = torch.nn.Parameter(torch.zeros((), dtype=F64))
    q = fit(deferred(dist.Normal, mean, lambda: torch.exp(log_std)), data)
    assert q.loc.item() == pytest.approx(data.mean().item(), abs=1e-4)
    assert q.scale.item() == pytest.approx(data.std(unbiased=False).item(), abs=1e-4)


@pytest.mark.parametrize("family", [dist.Normal, dist.Gamma])
def test_switching_normal_to_gamma_is_one_line(family):
    torch.manual_seed(1)
    data = torch.distributions.Gamma(3.0, 2.0).sample((300,)).to(F64)
    a = Constrained(torch.tensor(1.0, dtype=F64), constraints.positive)
    b = Constrained(torch.tensor(1.0, dtype=F64), constraints.positive)
    q = fit(deferred(family, a, b), data, steps=1500)  # the one line that names the family
    # Both maximum-likelihood fits match the sample mean; Gamma's also solves
    # log(alpha) - digamma(alpha) = log(mean(x)) - mean(log(x)).
    assert q.mean.item() == pytest.approx(data.mean().item(), abs=1e-3)
    if family is dist.Gamma:
        alpha = q.concentration.detach()
        lhs = torch.log(alpha) - torch.digamma(alpha)
        rhs = torch.log(data.mean()) - torch.log(data).mean()
        assert lhs.item() == pytest.approx(rhs.item(), abs=1e-4)


def test_every_use_sees_the_current_values():
    scale = Constrained(2.0, constraints.positive)
    q = deferred(dist.Normal, 0.0, scale)
    assert q.scale.item() == pytest.approx(2.0)
    with torch.no_grad():
        scale.unconstrained.fill_(0.0)
    assert q.scale.item() == 1.0
    assert q.stddev.item() == 1.0 and q.variance.item() == 1.0


def test_it_is_not_a_distribution_but_a_sample_site_records_a_concrete_one():
    loc = torch.nn.Parameter(torch.tensor(0.5))
    q = deferred(dist.Normal, loc, Constrained(1.0, constraints.positive))
    assert not isinstance(q, torch.distributions.Distribution)

    def model():
        return pyro.sample("x", q)

    site = poutine.trace(model).get_trace().nodes["x"]
    assert type(site["fn"]) is dist.Normal
    assert site["value"].requires_grad
    torch.autograd.grad(site["fn"].log_prob(site["value"]), loc)


def test_observed_sample_site_with_a_deferred_distribution():
    q = deferred(dist.Gamma, Constrained(2.0, constraints.positive), 1.0)
    with poutine.trace() as tr:
        pyro.sample("y", q, obs=torch.tensor(1.5))
    assert tr.trace.log_prob_sum().item() == pytest.approx(
        dist.Gamma(2.0, 1.0).log_prob(torch.tensor(1.5)).item(), rel=1e-6
    )


def test_distribution_interface_delegates_to_a_fresh_build():
    loc, scale = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0])
    q = deferred(dist.Normal, loc, Constrained(scale, constraints.positive))
    ref = dist.Normal(loc, scale)
    x = torch.tensor([0.3, -0.4])
    assert torch.allclose(q.log_prob(x), ref.log_prob(x))
    assert torch.allclose(q.cdf(x), ref.cdf(x))
    assert torch.allclose(q.icdf(torch.tensor([0.2, 0.7])), ref.icdf(torch.tensor([0.2, 0.7])))
    assert torch.allclose(q.entropy(), ref.entropy())
    assert torch.equal(q.mean, ref.mean) and torch.equal(q.mode, ref.mode)
    assert q.batch_shape == (2,) and q.event_shape == ()
    assert q.support is constraints.real and q.has_rsample
    assert q.rsample((3,)).shape == (3, 2) and q.sample().shape == (2,)
    assert not q.sample().requires_grad
    assert q.rsample().requires_grad


def test_discrete_distribution_with_enumerate_support():
    q = deferred(dist.Categorical, logits=torch.nn.Parameter(torch.zeros(3)))
    assert q.has_enumerate_support
    assert q.enumerate_support().tolist() == [0, 1, 2]
    assert torch.allclose(q.probs, torch.full((3,), 1 / 3))


def test_shape_helpers_return_deferred_distributions():
    scale = Constrained(torch.ones(3), constraints.positive)
    q = deferred(dist.Normal, torch.zeros(3), scale)
    event = q.to_event(1)
    assert isinstance(event, DeferredDistribution)
    assert event.batch_shape == () and event.event_shape == (3,)
    assert q.expand_by([4]).batch_shape == (4, 3)
    assert q.expand([2, 3]).batch_shape == (2, 3)
    masked = q.mask(torch.tensor([True, False, True]))
    assert isinstance(masked, DeferredDistribution)
    assert masked.log_prob(torch.zeros(3))[1].item() == 0.0
    with torch.no_grad():
        scale.unconstrained.fill_(math.log(2.0))
    assert torch.allclose(event.stddev, torch.full((3,), 2.0))
    assert list(event.parameters()) == [scale.unconstrained]


def test_shape_helpers_on_plain_torch_distributions():
    q = deferred(torch.distributions.Normal, torch.zeros(2), torch.ones(2))
    assert q.to_event(1).event_shape == (2,)
    assert q.to_event(0).event_shape == ()
    assert q.mask(torch.tensor([False, True])).log_prob(torch.zeros(2))[0].item() == 0.0


# ---- parameters -------------------------------------------------------------------------------


def test_parameters_are_leaves_of_parameters_constrained_values_and_callables():
    loc = torch.nn.Parameter(torch.zeros(()))
    log_std = torch.nn.Parameter(torch.zeros(()))
    c = Constrained(1.0, constraints.positive)
    q = deferred(dist.Normal, loc, lambda: torch.exp(log_std) + c())
    names = [n for n, _ in q.named_parameters()]
    assert names == ["loc", "scale.0", "scale.1"]
    assert [id(p) for p in q.parameters()] == [id(loc), id(log_std), id(c.unconstrained)]
    frozen = deferred(dist.Normal, torch.zeros(()), torch.ones(()))
    assert list(frozen.parameters()) == []


def test_parameters_of_a_thunk_and_of_nested_deferred_distributions_are_deduplicated():
    loc = torch.nn.Parameter(torch.zeros(2))
    c = Constrained(torch.ones(2), constraints.positive)
    thunk = deferred(lambda: dist.Normal(loc, c()).to_event(1))
    assert [id(p) for p in thunk.parameters()] == [id(loc), id(c.unconstrained)]
    base = deferred(dist.Normal, loc, c)
    nested = deferred(dist.Independent, base, 1)
    assert [n for n, _ in nested.named_parameters()] == [
        "base_distribution.loc",
        "base_distribution.scale.unconstrained",
    ]
    twice = deferred(dist.Normal, loc, lambda: loc.abs() + 1.0)
    assert [n for n, _ in twice.named_parameters()] == ["loc"]


def test_constrained_matrix_argument_in_a_multivariate_normal():
    tril = Constrained(torch.tensor([[2.0, 0.0], [0.5, 1.0]]), constraints.lower_cholesky)
    q = deferred(dist.MultivariateNormal, torch.zeros(2), scale_tril=tril)
    assert torch.allclose(q.covariance_matrix, tril() @ tril().T)
    assert [n for n, _ in q.named_parameters()] == ["scale_tril.unconstrained"]
    fit_data = torch.randn(50, 2) @ torch.tensor([[1.0, 0.0], [0.8, 0.5]])
    loss0 = -q.log_prob(fit_data).mean().item()
    fit(q, fit_data, steps=50)
    assert -q.log_prob(fit_data).mean().item() < loss0


# ---- Constrained ------------------------------------------------------------------------------

CONSTRAINTS = [
    (constraints.real, st.floats(-5, 5)),
    (constraints.positive, st.floats(1e-3, 50)),
    (constraints.unit_interval, st.floats(1e-3, 1 - 1e-3)),
    (constraints.interval(-2.0, 3.0), st.floats(-1.99, 2.99)),
    (constraints.greater_than(1.0), st.floats(1.01, 20)),
]


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(range(len(CONSTRAINTS))).flatmap(
        lambda i: st.tuples(st.just(i), st.lists(CONSTRAINTS[i][1], min_size=1, max_size=4))
    )
)
def test_constrained_round_trips_its_init(case):
    i, values = case
    constraint = CONSTRAINTS[i][0]
    init = torch.tensor(values, dtype=F64)
    c = Constrained(init, constraint)
    assert c.unconstrained.is_leaf and c.unconstrained.requires_grad
    assert isinstance(c.unconstrained, torch.nn.Parameter)
    assert torch.allclose(c(), init, rtol=1e-9, atol=1e-9)
    assert bool(constraint.check(c()).all())


def test_constrained_positive_gives_exactly_the_param_store_values_and_gradients():
    init = torch.tensor([0.3, 2.0, 7.5])
    c = Constrained(init, constraints.positive)
    p = pyro.param("p", init, constraint=constraints.positive)
    assert torch.equal(c.unconstrained, p.unconstrained())
    assert torch.equal(c(), p)
    (g1,) = torch.autograd.grad((c() ** 2).sum(), c.unconstrained)
    (g2,) = torch.autograd.grad((p**2).sum(), p.unconstrained())
    assert torch.equal(g1, g2)


def test_constrained_copies_its_init_and_accepts_numbers():
    init = torch.tensor([1.0, 2.0])
    c = Constrained(init)
    with torch.no_grad():
        c.unconstrained.add_(1.0)
    assert init.tolist() == [1.0, 2.0]
    assert Constrained(3).unconstrained.dtype == torch.get_default_dtype()


def test_constrained_errors_name_the_constraint():
    with pytest.raises(ValueError, match=r"support of the constraint GreaterThan"):
        Constrained(torch.tensor([1.0, -1.0]), constraints.positive)
    with pytest.raises(ValueError, match="Constrained: init value is not finite"):
        Constrained(torch.tensor(float("nan")))
    with pytest.raises(TypeError, match="'constraint' should be a torch.distributions constraint"):
        Constrained(1.0, "positive")
    with pytest.raises(ValueError, match="no transform to the constraint Boolean"):
        Constrained(1.0, constraints.boolean)


def test_constrained_repr():
    assert repr(Constrained(2.0, constraints.positive)).startswith("Constrained(2, GreaterThan")
    assert "shape=(3,)" in repr(Constrained(torch.ones(3)))


# ---- validation once, errors ------------------------------------------------------------------


def test_arguments_are_validated_at_the_first_build_only():
    value = [torch.tensor(-1.0)]
    q = deferred(dist.Normal, 0.0, lambda: value[0])
    with pytest.raises(ValueError, match="scale"):
        q.log_prob(torch.tensor(0.0))
    value[0] = torch.tensor(1.0)
    assert q.resolve()._validate_args is True  # the first successful build validates
    assert q.resolve()._validate_args is False  # later builds do not


def test_validation_switch_off_skips_the_first_check():
    pyro.enable_validation(False)
    q = deferred(dist.Normal, 0.0, torch.tensor(-1.0))
    assert q.resolve()._validate_args is False


def test_a_callable_that_needs_arguments_is_named():
    q = deferred(dist.Normal, 0.0, lambda x: x)
    with pytest.raises(TypeError, match="argument 'scale' is a callable that needs arguments"):
        q.sample()


def test_a_factory_that_returns_no_distribution_is_refused():
    with pytest.raises(TypeError, match="expected a torch.distributions.Distribution"):
        deferred(lambda: torch.zeros(2)).sample()
    with pytest.raises(TypeError, match="'factory' should be a distribution class or a callable"):
        deferred(3.0)


def test_private_attributes_are_not_delegated():
    q = deferred(dist.Normal, 0.0, 1.0)
    with pytest.raises(AttributeError):
        q._no_such_thing  # noqa: B018
    with pytest.raises(AttributeError):
        q.no_such_thing  # noqa: B018


def test_repr_names_the_arguments():
    q = deferred(
        dist.Normal, torch.nn.Parameter(torch.zeros(())), Constrained(1.0, constraints.positive)
    )
    assert repr(q).startswith("deferred(Normal, loc=Parameter(0), scale=Constrained(1, GreaterThan")
    assert repr(deferred(dist.Normal, 0.0, lambda: torch.tensor(1.0))).endswith("scale=<lambda>)")


# ---- shared -----------------------------------------------------------------------------------


def test_shared_reuses_one_build_inside_the_block_and_rebuilds_after():
    q = deferred(dist.Normal, 0.0, Constrained(1.0, constraints.positive))
    assert q.resolve() is not q.resolve()
    with q.shared() as d:
        assert q.resolve() is d
        with q.shared() as inner:
            assert inner is d
        assert q.resolve() is d
        assert q.to_event(0).resolve() is d
    assert q.resolve() is not d
    with pytest.raises(KeyError), q.shared():
        raise KeyError("inside")
    assert q._shared is None


def test_shared_gives_the_same_gradients_as_rebuilding():
    c = Constrained(torch.tensor([1.0, 2.0]), constraints.positive)
    q = deferred(dist.Normal, torch.zeros(2), c)
    x = torch.tensor([0.5, -1.0])

    def loss():
        return (q.log_prob(x) + q.entropy() + q.stddev).sum()

    (rebuilt,) = torch.autograd.grad(loss(), c.unconstrained)
    with q.shared():
        (shared,) = torch.autograd.grad(loss(), c.unconstrained)
    assert torch.allclose(rebuilt, shared)


# ---- SVI --------------------------------------------------------------------------------------


def conjugate_model(data):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(mu, 1.0), obs=data)


def param_guide(data):
    loc = pyro.param("loc", torch.tensor(0.0))
    scale = pyro.param("scale", torch.tensor(1.0), constraint=constraints.positive)
    pyro.sample("mu", dist.Normal(loc, scale))


def make_deferred_guide():
    q = deferred(dist.Normal, Constrained(0.0), Constrained(1.0, constraints.positive))

    def guide(data):
        pyro.module("q", q)
        pyro.sample("mu", q)

    return q, guide


def run_svi(guide, data, steps=150):
    pyro.set_rng_seed(0)
    svi = SVI(conjugate_model, guide, Adam({"lr": 0.05}), Trace_ELBO())
    losses = svi.run(steps, data, progress=False)
    return losses, [v.detach().clone() for _, v in pyro.get_param_store().named_parameters()]


def test_deferred_guide_follows_the_param_guide_trajectory_under_svi():
    data = normal_data(n=20, loc=1.5, scale=1.0).float()
    losses_param, params_param = run_svi(param_guide, data)
    pyro.clear_param_store()
    q, guide = make_deferred_guide()
    losses_deferred, params_deferred = run_svi(guide, data)
    assert losses_deferred == losses_param
    assert all(torch.equal(a, b) for a, b in zip(params_param, params_deferred, strict=True))
    assert sorted(pyro.get_param_store().keys()) == [
        "q$$$loc.unconstrained",
        "q$$$scale.unconstrained",
    ]
    posterior_mean = data.sum() / (len(data) + 1 / 100)
    assert q.loc.item() == pytest.approx(posterior_mean.item(), abs=0.1)


def test_deferred_guide_with_torch_optim_and_differentiable_loss():
    data = normal_data(n=20, loc=1.5, scale=1.0).float()
    q = deferred(dist.Normal, Constrained(0.0), Constrained(1.0, constraints.positive))

    def guide(data):
        pyro.sample("mu", q)

    opt = torch.optim.Adam(q.parameters(), lr=0.05)
    elbo = Trace_ELBO(num_particles=4, vectorize_particles=True)
    pyro.set_rng_seed(0)
    for _ in range(300):
        opt.zero_grad()
        elbo.differentiable_loss(conjugate_model, guide, data).backward()
        opt.step()
    n = len(data)
    assert q.loc.item() == pytest.approx((data.sum() / (n + 0.01)).item(), abs=0.1)
    assert q.scale.item() == pytest.approx((1 / (n + 0.01)) ** 0.5, abs=0.08)


def test_the_first_build_validates_by_the_switch_as_it_was_then():
    # ``validation_enabled()`` is also Pyro's context manager: a getter call must not hand torch
    # the live switch, whose truth would follow later changes.
    q = deferred(dist.Normal, torch.tensor(0.0), Constrained(1.0, constraints.positive))
    first = q.resolve()
    assert first._validate_args is True
    pyro.enable_validation(False)
    assert first._validate_args is True
