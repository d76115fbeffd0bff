"""Non-finite losses: the error (or warning) names every model and guide site whose log density
is non-finite and the parameters feeding it; a finite loss never runs the diagnosis."""

import math
import warnings

import pytest
import torch
from torch.distributions import constraints

import miniprob as pyro
import miniprob.distributions as dist
from miniprob.infer import SVI, Trace_ELBO, TraceMeanField_ELBO, diagnostics, set_nonfinite_mode
from miniprob.optim import Adam


@pytest.fixture(autouse=True)
def raise_mode():
    set_nonfinite_mode("raise")
    yield
    set_nonfinite_mode("raise")


def _set_unconstrained(name, value):
    with torch.no_grad():
        pyro.get_param_store().unconstrained(name).fill_(value)


def model_with_scale():
    s = pyro.param("s", torch.tensor(1.0), constraint=constraints.positive)
    z = pyro.sample("z", dist.Normal(0.0, s))
    with pyro.plate("data", 4):
        pyro.sample("obs", dist.Normal(z, 1.0), obs=torch.zeros(4))


def guide_with_loc():
    m = pyro.param("m", torch.tensor(0.5))
    pyro.sample("z", dist.Normal(m, 1.0))


def test_model_site_names_the_parameter_feeding_its_distribution():
    pyro.param("s", torch.tensor(1.0), constraint=constraints.positive)
    _set_unconstrained("s", -1000.0)  # s = exp(-1000) = 0: Normal(0, 0) has no density
    with pytest.raises(ValueError) as info:
        Trace_ELBO().differentiable_loss(model_with_scale, guide_with_loc)
    msg = str(info.value)
    assert msg.startswith("loss is ")
    assert "model site 'z'" in msg
    assert "parameters feeding its distribution: s = 0.0 (unconstrained -1000.0)" in msg
    assert "parameters feeding its value: m = 0.5" in msg
    assert "model site 'obs'" not in msg and "guide site" not in msg


def test_guide_site_and_its_parameter():
    def guide():
        q = pyro.param("q", torch.tensor(1.0), constraint=constraints.positive)
        pyro.sample("z", dist.Normal(0.0, q))

    def model():
        pyro.sample("z", dist.Normal(0.0, 1.0))

    pyro.param("q", torch.tensor(1.0), constraint=constraints.positive)
    _set_unconstrained("q", 1000.0)  # q = inf
    with pytest.raises(ValueError) as info:
        SVI(model, guide, Adam({"lr": 0.1}), Trace_ELBO()).step()
    msg = str(info.value)
    assert "guide site 'z'" in msg
    assert "q = inf (unconstrained 1000.0)" in msg
    assert "non-finite parameters: q = inf" in msg
    assert pyro.get_param_store().unconstrained("q").item() == 1000.0  # nothing stepped


def test_plate_site_counts_its_nonfinite_elements():
    def model():
        loc = pyro.param("loc", torch.tensor([0.0, 1.0, float("inf"), 2.0, float("nan")]))
        with pyro.plate("data", 5):
            pyro.sample("obs", dist.Normal(loc, 1.0), obs=torch.zeros(5))

    with pytest.raises(ValueError, match=r"init value is not finite"):
        model()
    pyro.param("loc", torch.zeros(5))
    with torch.no_grad():
        pyro.get_param_store().unconstrained("loc")[2:] = torch.tensor([math.inf, 2.0, math.nan])
    with pytest.raises(ValueError) as info:
        Trace_ELBO().differentiable_loss(model, lambda: None)
    msg = str(info.value)
    assert "model site 'obs'" in msg and "(2 of 5 elements non-finite)" in msg
    assert "loc = shape (5,)" in msg and "2 non-finite" in msg


def test_every_offending_site_is_named_in_model_and_guide():
    def model():
        a = pyro.param("a", torch.tensor(0.0))
        pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(a, 1.0), obs=torch.tensor(1.0))
        pyro.sample("w", dist.Normal(0.0, 1.0), obs=torch.tensor(1.0))

    def guide():
        b = pyro.param("b", torch.tensor(1.0), constraint=constraints.positive)
        pyro.sample("x", dist.Normal(0.0, b))

    pyro.param("a", torch.tensor(0.0))
    pyro.param("b", torch.tensor(1.0), constraint=constraints.positive)
    _set_unconstrained("a", math.nan)
    _set_unconstrained("b", -1000.0)
    with pytest.raises(ValueError) as info:
        Trace_ELBO().loss(model, guide)  # no_grad: parameters named by their values
    msg = str(info.value)
    for line in (
        "model site 'y'",
        "parameters feeding its distribution: a = nan",
        "guide site 'x'",
        "parameters feeding its distribution: b = 0.0",
        "non-finite parameters: a = nan",
    ):
        assert line in msg
    assert "site 'w'" not in msg and "model site 'x'" not in msg  # x = 0 is fine in the model


def test_the_failing_particle_is_reported():
    calls = [0]

    def model():
        calls[0] += 1
        loc = torch.tensor(math.nan if calls[0] == 3 else 0.0)
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=torch.tensor(0.0))

    with pytest.raises(ValueError) as info:
        Trace_ELBO(num_particles=4).loss_and_grads(model, lambda: None)
    msg = str(info.value)
    assert "particle 2:" in msg and "model site 'obs'" in msg
    assert "non-finite distribution arguments: loc=nan" in msg


def test_warn_mode_warns_and_goes_on():
    set_nonfinite_mode("warn")

    def model():
        pyro.sample("obs", dist.Normal(0.0, 1.0), obs=torch.tensor(math.inf))

    with pytest.warns(UserWarning, match=r"(?s)loss is .*model site 'obs'.*non-finite value: inf"):
        loss = Trace_ELBO().loss(model, lambda: None)
    assert not math.isfinite(loss)
    with pytest.warns(UserWarning, match="model site 'obs'"):
        TraceMeanField_ELBO().differentiable_loss(model, lambda: None)


def test_unknown_mode():
    with pytest.raises(ValueError, match=r"'raise' or 'warn', got 'ignore'"):
        set_nonfinite_mode("ignore")
    assert diagnostics.get_nonfinite_mode() == "raise"


def test_callable_loss_without_traces():
    def loss(model, guide):
        return pyro.param("w", torch.tensor(1.0)) * math.inf

    with pytest.raises(ValueError, match=r"(?s)loss is inf.*without traces"):
        SVI(lambda: None, lambda: None, Adam({"lr": 0.1}), loss).step()
    assert "w" not in pyro.get_param_store()


def test_overflowing_sum_says_so():
    def model():
        with pyro.plate("data", 2):
            pyro.factor("f", torch.tensor([3e38, 3e38]))

    with pytest.raises(ValueError, match="no single site is non-finite"):
        Trace_ELBO().loss(model, lambda: None)


@pytest.mark.parametrize("elbo", [Trace_ELBO(), Trace_ELBO(num_particles=3), TraceMeanField_ELBO()])
def test_a_finite_loss_never_runs_the_diagnosis(monkeypatch, elbo):
    def forbidden(*args, **kwargs):
        raise AssertionError("the diagnosis ran for a finite loss")

    monkeypatch.setattr(diagnostics, "nonfinite_report", forbidden)
    svi = SVI(model_with_scale, guide_with_loc, Adam({"lr": 0.01}), elbo)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(5):
            assert math.isfinite(svi.step())
        elbo.differentiable_loss(model_with_scale, guide_with_loc)
        elbo.loss(model_with_scale, guide_with_loc)


def test_arguments_of_wrapped_distributions_are_named():
    def model():
        loc = pyro.param("loc", torch.zeros(3))
        pyro.sample("x", dist.Normal(loc * math.nan, 1.0).to_event(1), obs=torch.zeros(3))

    with pytest.raises(ValueError) as info:
        Trace_ELBO().differentiable_loss(model, lambda: None)
    msg = str(info.value)
    assert "non-finite distribution arguments: base_dist.loc=shape (3,)" in msg
    assert "parameters feeding its distribution: loc = shape (3,)" in msg
