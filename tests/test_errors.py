"""Bad input gets a clear error that names the site or parameter and what was expected, and an
exception anywhere inside a model, guide or loss leaves nothing half-done: the handler stack
and the plate dims are empty again, and a failed ``SVI.step`` leaves parameters, gradients and
optimizer state exactly as they were before it."""

import math
import warnings

import pytest
import torch
from torch.distributions import constraints

import miniprob as pyro
import miniprob.distributions as dist
from miniprob import poutine
from miniprob.infer import SVI, Predictive, Trace_ELBO, TraceMeanField_ELBO
from miniprob.optim import SGD, Adam, ClippedAdam
from miniprob.optim.multi import MixedMultiOptimizer
from miniprob.runtime import _PLATE_NAMES, get_stack


def get_trace(fn, *args):
    return poutine.trace(fn).get_trace(*args)


def assert_clean():
    assert get_stack() == ()
    assert _PLATE_NAMES.get() == ()


# ---- bad input: one test per kind, checking the type and what the message names ----------


def test_duplicate_sample_site():
    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"duplicate sample site named 'x'.*unique name"):
        get_trace(model)
    assert_clean()


def test_param_without_init_for_unknown_name():
    with pytest.raises(KeyError, match=r"param 'nope' is not in the param store.*no init value"):
        pyro.param("nope")
    with pytest.raises(KeyError, match="'nope'"):
        get_trace(lambda: pyro.param("nope"))
    assert "nope" not in pyro.get_param_store()


@pytest.mark.parametrize(
    "init, constraint, expected",
    [
        (-1.0, constraints.positive, r"param 's'.*outside the support.*GreaterThan"),
        (2.0, constraints.unit_interval, r"param 's'.*outside the support.*Interval"),
        (float("nan"), constraints.real, r"param 's'.*not finite.*nan"),
        (float("inf"), constraints.positive, r"param 's'.*not finite.*inf"),
    ],
)
def test_param_init_outside_support_or_nonfinite(init, constraint, expected):
    with pytest.raises(ValueError, match=expected):
        pyro.param("s", torch.tensor([1.0, init]), constraint=constraint)
    assert "s" not in pyro.get_param_store()


def test_param_unknown_constraint():
    with pytest.raises(ValueError, match=r"param 's'.*must be a torch.*Constraint.*'positive'"):
        pyro.param("s", torch.tensor(1.0), constraint="positive")

    class Odd(constraints.Constraint):
        def check(self, value):
            return value % 2 == 1

    with pytest.raises(ValueError, match=r"param 's'.*no transform to the constraint.*register"):
        pyro.param("s", torch.tensor(1.0), constraint=Odd())
    assert "s" not in pyro.get_param_store()


@pytest.mark.parametrize("fn", [3.0, torch.tensor(1.0), "Normal", dist.Normal])
def test_sample_with_something_not_a_distribution(fn):
    with pytest.raises(TypeError, match=r"sample site 'x': expected a torch.distributions.Distr"):
        pyro.sample("x", fn)
    with pytest.raises(TypeError, match=r"sample site 'x'"):
        get_trace(lambda: pyro.sample("x", fn))
    assert_clean()


@pytest.mark.parametrize(
    "d, value, support",
    [
        (dist.Poisson(2.0), -1.0, "IntegerGreaterThan"),
        (dist.Exponential(1.0), -0.5, "GreaterThanEq"),
        (dist.Bernoulli(0.5), 0.5, "Boolean"),
        (dist.Beta(2.0, 2.0), 1.5, "Interval"),
    ],
)
def test_observed_value_outside_support(d, value, support):
    def model():
        pyro.sample("y", d, obs=torch.tensor(value))

    with pytest.raises(ValueError, match=rf"sample site 'y': observed value.*support.*{support}"):
        model()
    # Recorded unchecked, checked when scored, as in Pyro.
    conditioned = poutine.condition(lambda: pyro.sample("y", d), data={"y": torch.tensor(value)})
    for program in (model, conditioned):
        tr = get_trace(program)
        with pytest.raises(ValueError, match=r"computing log_prob_sum at site 'y'"):
            tr.log_prob_sum()
        with pytest.raises(ValueError, match=rf"sample site 'y': observed value.*{support}"):
            tr.compute_log_prob()
    pyro.enable_validation(False)
    get_trace(model).compute_log_prob()  # validation off: no check


def test_batch_shape_does_not_fit_plate():
    def model():
        with pyro.plate("data", 3):
            pyro.sample("x", dist.Normal(torch.zeros(4), 1.0))

    with pytest.raises(ValueError) as info:
        get_trace(model)
    msg = str(info.value)
    assert "'x'" in msg and "plate('data')" in msg and "size 3" in msg and "(4,)" in msg
    assert_clean()


def test_log_prob_shape_does_not_fit_plates():
    def model():
        with pyro.plate("data", 3):
            pyro.sample("x", dist.Normal(torch.zeros(4, 1), 1.0), obs=torch.zeros(4, 3))

    with pytest.raises(ValueError) as info:
        Trace_ELBO().loss(model, lambda: None)
    msg = str(info.value)
    assert "site 'x'" in msg and "['data']" in msg and "[3]" in msg and "[4, 3]" in msg
    assert "dim -2" in msg and "no plate declares that dim" in msg


def test_observed_value_shape_does_not_fit_plate():
    def model():
        with pyro.plate("data", 3):
            pyro.sample("x", dist.Normal(torch.zeros(3), 1.0), obs=torch.zeros(4))

    with pytest.raises(ValueError) as info:
        Trace_ELBO().loss(model, lambda: None)
    msg = str(info.value)
    assert "site 'x'" in msg and "plate 'data' (size 3" in msg and "(4,)" in msg and "(3,)" in msg


def test_two_plates_claim_one_dim():
    def model():
        with pyro.plate("a", 3, dim=-1), pyro.plate("b", 4, dim=-1):
            pass

    with pytest.raises(ValueError, match=r"plates 'b' and 'a' both claim dim=-1"):
        get_trace(model)
    assert_clean()


def test_duplicate_plate_name():
    def model():
        with pyro.plate("a", 3), pyro.plate("a", 4):
            pass

    with pytest.raises(ValueError, match=r"duplicate plate 'a'"):
        model()
    assert_clean()


@pytest.mark.parametrize("indices", [[0, 5], [-1, 1], [3]])
def test_plate_subsample_out_of_range(indices):
    with pytest.raises(ValueError, match=r"plate 'a': subsample indices must lie in \[0, 3\)"):
        pyro.plate("a", 3, subsample=torch.tensor(indices))


@pytest.mark.parametrize(
    "value",
    [0.0, -1.0, float("inf"), float("nan"), torch.tensor([1.0, 0.0]), torch.tensor(float("nan"))],
)
def test_scale_not_positive_or_not_finite(value):
    with pytest.raises(ValueError, match=r"'scale' argument should be (a )?positive.*got"):
        poutine.scale(scale=value)


@pytest.mark.parametrize("value", [torch.tensor([1.0, 0.0]), torch.tensor([1, 0]), 1, None, "yes"])
def test_mask_not_boolean(value):
    with pytest.raises(ValueError, match=r"'mask' argument should be a bool"):
        poutine.mask(mask=value)


def test_guide_site_absent_from_model():
    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0))

    def guide():
        pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.sample("typo", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"guide sample site\(s\) \['typo'\] do not appear"):
        SVI(model, guide, Adam({"lr": 0.1}), Trace_ELBO()).step()
    assert_clean()


def test_mixed_multi_optimizer_overlapping_and_unknown_names():
    with pytest.raises(ValueError, match=r"parameter 'a' is claimed by two optimizers"):
        MixedMultiOptimizer([(["a"], Adam({"lr": 0.1})), (["b", "a"], SGD({"lr": 0.1}))])
    a = pyro.param("a", torch.tensor(1.0))
    b = pyro.param("b", torch.tensor(1.0))
    opt = MixedMultiOptimizer([(["a"], Adam({"lr": 0.1}))])
    with pytest.raises(ValueError, match=r"no optimizer was given for \['b'\]"):
        opt.step(a + b, {"a": a, "b": b})
    opt = MixedMultiOptimizer([(["a", "zz"], Adam({"lr": 0.1}))])
    with pytest.raises(ValueError, match=r"params \['zz'\] were named but not passed"):
        opt.step(a, {"a": a})
    assert pyro.param("a").item() == 1.0  # nothing stepped


def test_optim_args_unknown_key():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lrr'\] for Adam; allowed: .*'lr'"):
        Adam({"lr": 0.1, "lrr": 0.2})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['bogus'\] for ClippedAdam"):
        ClippedAdam({"lr": 0.1, "bogus": 1})
    opt = Adam(lambda name: {"lr": 0.1, "bogus": 1})
    w = pyro.param("w", torch.tensor(1.0))
    w.backward()
    with pytest.raises(ValueError, match=r"optim_args\('w'\): unknown key\(s\) \['bogus'\]"):
        opt([w.unconstrained()])


# ---- after an exception: nothing half-done ------------------------------------------------


class Boom(Exception):
    pass


def _model(data):
    loc = pyro.param("loc", torch.tensor(0.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)


def _guide_that_fails(when):
    def guide(data):
        pyro.param("scale_q", torch.tensor(1.0), constraint=constraints.positive)
        if when == "guide":
            pyro.param("created_then_failed", torch.ones(3))
            with pyro.plate("inner", 2), poutine.scale(scale=2.0):
                raise Boom()

    return guide


def _snapshot(optim):
    store = pyro.get_param_store()
    params = {k: v.detach().clone() for k, v in store.named_parameters()}
    grads = {k: v.grad for k, v in store.named_parameters()}
    return params, grads, optim.get_state()


def _assert_same_state(before, after):
    (p0, g0, o0), (p1, g1, o1) = before, after
    assert list(p0) == list(p1)
    for k in p0:
        assert torch.equal(p0[k], p1[k]), k
        assert g0[k] is None and g1[k] is None, k
    assert o0.keys() == o1.keys()
    for name in o0:
        s0, s1 = o0[name]["state"], o1[name]["state"]
        assert s0.keys() == s1.keys()
        for i in s0:
            for key in s0[i]:
                assert torch.equal(torch.as_tensor(s0[i][key]), torch.as_tensor(s1[i][key]))
        assert o0[name]["param_groups"] == o1[name]["param_groups"]


@pytest.mark.parametrize("when", ["model", "guide", "loss", "backward", "optim"])
def test_failed_svi_step_leaves_everything_as_it_was(when):
    data = torch.tensor([1.0, 2.0, 3.0])
    fail = [False]

    def model(data):
        _model(data)
        if fail[0] and when == "model":
            pyro.param("new_in_model", torch.zeros(2))
            raise Boom()

    def guide(data):
        _guide_that_fails(when if fail[0] else None)(data)
        if fail[0] and when in ("loss", "backward", "optim"):
            pyro.param("new_in_guide", torch.zeros(2))

    elbo = Trace_ELBO()

    def loss(model, guide, *args):
        value = elbo.differentiable_loss(model, guide, *args)
        if fail[0] and when == "loss":
            raise Boom()
        if fail[0] and when == "backward":
            value.backward(retain_graph=True)  # gradients already on the leaves
            raise Boom()
        return value

    optim = Adam(lambda name: {"lr": 0.1, **({"bad_key": 1} if name == "new_in_guide" else {})})
    svi = SVI(model, guide, optim, loss)
    for _ in range(3):
        svi.step(data)
    before = _snapshot(optim)
    fail[0] = True
    expected = ValueError if when == "optim" else Boom
    with pytest.raises(expected):
        svi.step(data)
    assert_clean()
    _assert_same_state(before, _snapshot(optim))
    assert not any(k.startswith(("new_", "created_")) for k in pyro.get_param_store())
    # A later, successful step trains on from exactly there, as if the failure never was.
    fail[0] = False
    torch.manual_seed(0)
    svi.step(data)
    after_recovery = {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()}
    pyro.get_param_store().set_state(
        {
            "params": before[0],
            "constraints": {k: pyro.get_param_store().get_constraint(k) for k in before[0]},
        }
    )
    ref_optim = Adam({"lr": 0.1})
    ref_optim.set_state(before[2])
    ref = SVI(model, guide, ref_optim, Trace_ELBO())
    torch.manual_seed(0)
    ref.step(data)
    for k, v in pyro.get_param_store().named_parameters():
        assert torch.equal(v.detach(), after_recovery[k]), k


def test_failed_first_step_leaves_an_empty_store():
    def guide():
        pyro.param("a", torch.tensor(1.0))
        pyro.sample("x", dist.Normal(pyro.param("b", torch.tensor(0.0)), 1.0))
        raise Boom()

    svi = SVI(
        lambda: pyro.sample("x", dist.Normal(0.0, 1.0)), guide, Adam({"lr": 0.1}), Trace_ELBO()
    )
    with pytest.raises(Boom):
        svi.step()
    assert len(pyro.get_param_store()) == 0
    assert svi.optim.get_state() == {}
    assert_clean()


def test_keyboard_interrupt_is_undone_too():
    def guide():
        pyro.param("a", torch.tensor(1.0))
        raise KeyboardInterrupt

    svi = SVI(lambda: None, guide, Adam({"lr": 0.1}), TraceMeanField_ELBO())
    with pytest.raises(KeyboardInterrupt):
        svi.step()
    assert len(pyro.get_param_store()) == 0
    assert_clean()


def test_stack_is_empty_after_exceptions_in_trace_and_predictive():
    def model():
        with poutine.scale(scale=0.5), pyro.plate("p", 2):
            pyro.sample("z", dist.Normal(0.0, 1.0))
            with poutine.mask(mask=True):
                raise Boom()

    with pytest.raises(Boom):
        get_trace(model)
    assert_clean()
    with pytest.raises(Boom):
        Predictive(model, num_samples=3)()
    assert_clean()
    with pytest.raises(Boom):
        Predictive(model, num_samples=3, parallel=True)()
    assert_clean()
    with pytest.raises(Boom):
        with poutine.trace(), poutine.seed(rng_seed=0), poutine.block():
            model()
    assert_clean()


def test_stack_is_empty_after_an_exception_in_a_sequential_plate():
    def model():
        for i in pyro.plate("seq", 3):
            pyro.sample(f"x_{i}", dist.Normal(0.0, 1.0))
            if i == 1:
                raise Boom()

    with pytest.raises(Boom):
        get_trace(model)
    assert_clean()


# ---- accepted as in Pyro: no error -------------------------------------------------------------


@pytest.mark.parametrize(
    "elbo",
    [Trace_ELBO(), Trace_ELBO(num_particles=2, vectorize_particles=True), TraceMeanField_ELBO()],
)
def test_a_latent_the_guide_lacks_is_drawn_from_the_prior(elbo):
    def model():
        pyro.sample("a", dist.Normal(0.0, 1.0))
        pyro.sample("b", dist.Bernoulli(0.5))
        pyro.sample("c", dist.Normal(0.0, 1.0), obs=torch.tensor(0.5))

    def guide():
        pyro.sample("b", dist.Bernoulli(pyro.param("p", torch.tensor(0.3))))

    if isinstance(elbo, TraceMeanField_ELBO):
        guide = lambda: None  # noqa: E731 - mean field: the guide must be reparameterizable
    with pytest.warns(UserWarning, match=r"Found vars in model but not guide: \['a'"):
        loss = elbo.loss(model, guide)
    assert math.isfinite(loss)


def test_a_plate_subsampled_on_one_side_only():
    data = torch.arange(10.0)

    def model():
        with pyro.plate("data", 10, subsample_size=3) as idx:
            pyro.sample("obs", dist.Normal(0.0, 20.0), obs=data[idx])

    def guide():
        with pyro.plate("guide_only", 10, subsample_size=3):
            pass

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trace_ELBO().loss(model, lambda: None)
    # A plate only in the guide is fine, but warned about, as in Pyro.
    with pytest.warns(UserWarning, match="plate statements in guide but not model"):
        Trace_ELBO().loss(model, guide)


@pytest.mark.parametrize(
    "d, value",
    [
        (dist.Beta(2.0, 2.0), 0.5),
        (dist.LogNormal(0.0, 1.0), 2.0),
        (dist.Categorical(torch.ones(3) / 3), 2),
        (dist.Bernoulli(0.3), True),
        (dist.Poisson(3.0), 2),
    ],
)
def test_an_observation_given_as_a_python_number(d, value):
    def model():
        pyro.sample("x", d, obs=value)

    expected = d.log_prob(torch.tensor(float(value))).item()
    assert Trace_ELBO().loss(model, lambda: None) == pytest.approx(-expected)
    conditioned = poutine.condition(lambda: pyro.sample("x", d), data={"x": value})
    assert Trace_ELBO().loss(conditioned, lambda: None) == pytest.approx(-expected)
    with pytest.raises(ValueError, match=r"sample site 'x': observed value lies outside"):
        pyro.sample("x", d, obs=-1)


def test_observed_value_with_fewer_dims_than_the_event():
    d = dist.Exponential(torch.ones(2)).to_event(1)
    with pytest.raises(ValueError, match=r"site 'x': observed value of shape \(\) does not fit"):
        pyro.sample("x", d, obs=torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"event shape \(2,\)"):
        pyro.sample("x", d, obs=torch.tensor(1.0))
