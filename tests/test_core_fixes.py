"""Regression tests for fixes in the core: observed-value validation, handlers on methods and as
decorators, ParamStore state, and ``scale``'s argument. Where Pyro defines the behaviour, the
same program runs under both."""

import gc
import weakref

import numpy as np
import pytest
import torch

import miniprob as mp
import miniprob.distributions as dist
from miniprob import poutine
from miniprob.validation import _CHECKED_OBS, check_observed

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def log_prob_sum(lib, model, *args):
    return lib.poutine.trace(model).get_trace(*args).log_prob_sum()


# ---- observed values --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_checked_observations():
    """Other tests may have cached an observation at a site of the same name."""
    _CHECKED_OBS.clear()


def test_an_inference_mode_observation_is_checked_as_in_pyro(pyro_ref):
    import pyro.distributions as pdist

    with torch.inference_mode():
        good = torch.tensor([0.5, 1.0])
        bad = torch.tensor([0.5, -1.0])
    expected = log_prob_sum(
        pyro_ref, lambda: pyro_ref.sample("x", pdist.Normal(0.0, 1.0), obs=good)
    )
    actual = log_prob_sum(mp, lambda: mp.sample("x", dist.Normal(0.0, 1.0), obs=good))
    assert torch.equal(actual, expected)
    assert "x" not in _CHECKED_OBS  # no version counter to tell a later change by: not cached
    with pytest.raises(ValueError, match="'x'.*support"):
        mp.sample("x", dist.Exponential(1.0), obs=bad)


@pytest.mark.parametrize("via", ["sample", "condition"])
def test_a_nan_observation_with_real_support_names_the_site(pyro_ref, via):
    import pyro.distributions as pdist

    obs = torch.tensor([1.0, float("nan")])
    with pytest.raises(ValueError, match="'x'"):
        log_prob_sum(pyro_ref, lambda: pyro_ref.sample("x", pdist.Normal(0.0, 1.0), obs=obs))
    with pytest.raises(ValueError, match="'x'.*support Real"):
        if via == "sample":
            mp.sample("x", dist.Normal(0.0, 1.0), obs=obs)
        else:
            poutine.condition(lambda: mp.sample("x", dist.Normal(0.0, 1.0)), data={"x": obs})()


def test_a_static_real_observation_is_checked_once(monkeypatch):
    import miniprob.validation as validation

    calls = []
    real_holds = validation._holds
    monkeypatch.setattr(
        validation, "_holds", lambda support, value: calls.append(1) or real_holds(support, value)
    )
    data = torch.randn(5)
    for _ in range(3):
        mp.sample("x", dist.Normal(0.0, 1.0), obs=data)
    assert len(calls) == 1
    data.add_(1.0)  # an in-place change bumps the version: checked again
    mp.sample("x", dist.Normal(0.0, 1.0), obs=data)
    assert len(calls) == 2
    data[0] = float("nan")
    with pytest.raises(ValueError, match="'x'"):
        mp.sample("x", dist.Normal(0.0, 1.0), obs=data)


def test_an_event_shape_mismatch_names_the_site_and_both_shapes(pyro_ref):
    import pyro.distributions as pdist

    def model(lib, d):
        lib.sample("x", d.MultivariateNormal(torch.zeros(2), torch.eye(2)), obs=torch.zeros(1))

    with pytest.raises(ValueError, match="right-most size of value must match event_shape"):
        log_prob_sum(pyro_ref, model, pyro_ref, pdist)
    with pytest.raises(ValueError, match=r"'x'.*event_shape.*\(1,\).*\(2,\)"):
        model(mp, dist)
    with pytest.raises(ValueError, match=r"'x'.*event_shape"):
        poutine.condition(
            lambda: mp.sample("x", dist.MultivariateNormal(torch.zeros(2), torch.eye(2))),
            data={"x": torch.zeros(3, 1)},
        )()


def test_the_event_shape_is_checked_for_a_cached_tensor_too():
    data = torch.zeros(2)
    mp.sample("x", dist.MultivariateNormal(torch.zeros(2), torch.eye(2)), obs=data)
    with pytest.raises(ValueError, match="'x'.*event_shape"):
        mp.sample("x", dist.MultivariateNormal(torch.zeros(3), torch.eye(3)), obs=data)


@pytest.mark.parametrize("kind", ["to_event", "mask", "delta"])
def test_event_dims_that_pyro_broadcasts_are_accepted(pyro_ref, kind):
    """Independent and masked distributions leave the shape check to the distribution inside,
    and Delta never checks it: Pyro accepts event dims that broadcast there."""
    import pyro.distributions as pdist

    def model(lib, d):
        if kind == "delta":
            fn = d.Delta(torch.zeros(2), event_dim=1)
        else:
            fn = d.Normal(torch.zeros(3, 1), 1.0).to_event(1)
            if kind == "mask":
                fn = fn.mask(torch.tensor([True, False, True]))
        lib.sample("x", fn, obs=torch.zeros(3, 2) if kind != "delta" else torch.zeros(1))

    expected = log_prob_sum(pyro_ref, model, pyro_ref, pdist)
    actual = log_prob_sum(mp, model, mp, dist)
    torch.testing.assert_close(actual, expected)


def test_the_observation_cache_keeps_no_tensor_alive():
    data = torch.randn(1000)
    ref = weakref.ref(data)
    mp.sample("x", dist.Normal(0.0, 1.0), obs=data)
    assert "x" in _CHECKED_OBS
    del data
    gc.collect()
    assert ref() is None


def test_a_new_tensor_where_a_cached_one_died_is_checked():
    check_observed("x", dist.Exponential(1.0), torch.ones(3))
    gc.collect()
    # The cached tensor is gone; a new one (perhaps at the same address) must still be checked.
    with pytest.raises(ValueError, match="'x'"):
        check_observed("x", dist.Exponential(1.0), -torch.ones(3))


# ---- handlers on methods ----------------------------------------------------------------------


def method_models(lib, d):
    class Model:
        def __init__(self, loc):
            self.loc = loc

        @lib.poutine.scale(scale=0.5)
        def __call__(self, x):
            return lib.sample("x", d.Normal(self.loc, 1.0), obs=x)

        @lib.poutine.scale(scale=2.0)
        @lib.poutine.mask(mask=torch.tensor(False))
        def nested(self, x):
            return lib.sample("y", d.Normal(self.loc, 1.0), obs=x)

    return Model


@pytest.mark.parametrize("method", ["__call__", "nested"])
def test_a_handler_decorating_a_method_binds_self_as_in_pyro(pyro_ref, method):
    import pyro.distributions as pdist

    x = torch.tensor(0.3)
    expected = pyro_ref.poutine.trace(getattr(method_models(pyro_ref, pdist)(1.0), method))
    actual = poutine.trace(getattr(method_models(mp, dist)(1.0), method))
    expected, actual = expected.get_trace(x), actual.get_trace(x)
    (name,) = [n for n in actual.nodes if n in ("x", "y")]
    for key in ("scale", "value"):
        assert actual.nodes[name][key] == expected.nodes[name][key]
    assert torch.equal(actual.log_prob_sum(), expected.log_prob_sum())


def test_a_bound_handler_binds_each_object_and_leaves_the_class_attribute_alone():
    Model = method_models(mp, dist)
    handler = Model.__dict__["__call__"]
    assert Model.__call__ is handler  # read on the class: the handler itself
    a, b = Model(1.0), Model(2.0)
    assert a.__call__ is not handler and a.__call__.fn.__self__ is a
    with poutine.trace() as tr:
        a(torch.tensor(0.0))
    assert tr.trace.nodes["x"]["fn"].loc == 1.0
    with poutine.trace() as tr:
        b(torch.tensor(0.0))
    assert tr.trace.nodes["x"]["fn"].loc == 2.0
    assert handler.fn.__name__ == "__call__"  # binding wrapped a copy


def test_a_handler_without_a_function_or_around_a_callable_object_is_not_bound():
    class Draw:
        def __call__(self):
            return mp.sample("x", dist.Normal(0.0, 1.0))

    class Holder:
        context = poutine.scale(scale=0.5)
        wrapped = poutine.scale(Draw(), scale=0.5)
        static = poutine.scale(scale=0.5)(staticmethod(lambda: mp.sample("x", dist.Normal(0, 1))))

    holder = Holder()
    assert holder.context is Holder.__dict__["context"]
    assert holder.wrapped is Holder.__dict__["wrapped"]
    for name in ("wrapped", "static"):
        with poutine.trace() as tr:
            getattr(holder, name)()
        assert tr.trace.nodes["x"]["scale"] == 0.5


# ---- trace as a decorator ---------------------------------------------------------------------


def test_a_decorating_tracer_shows_the_trace_as_in_pyro(pyro_ref):
    import pyro.distributions as pdist

    def traced(lib, d):
        tracer = lib.poutine.trace()

        @tracer
        def model():
            return lib.sample("x", d.Normal(0.0, 1.0))

        model()
        return tracer

    expected, actual = traced(pyro_ref, pdist), traced(mp, dist)
    assert list(actual.trace.nodes) == list(expected.trace.nodes) == ["_INPUT", "x", "_RETURN"]


def test_a_decorating_tracer_shows_the_part_recorded_before_an_error(pyro_ref):
    import pyro.distributions as pdist

    def traced(lib, d):
        tracer = lib.poutine.trace()

        def model():
            lib.sample("x", d.Normal(0.0, 1.0))
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            tracer(model)()
        return tracer

    expected, actual = traced(pyro_ref, pdist), traced(mp, dist)
    assert list(actual.trace.nodes) == list(expected.trace.nodes) == ["_INPUT", "x"]


def test_one_tracer_around_two_functions_shows_the_latest_call():
    tracer = poutine.trace()
    model = tracer(lambda: mp.sample("m", dist.Normal(0.0, 1.0)))
    guide = tracer(lambda: mp.sample("g", dist.Normal(0.0, 1.0)))
    model_trace = model.get_trace()
    assert tracer.trace is model_trace
    guide_trace = guide.get_trace()
    assert tracer.trace is guide_trace
    assert "m" in model_trace.nodes and "g" not in model_trace.nodes  # not overwritten
    assert "g" in guide_trace.nodes and "m" not in guide_trace.nodes
    fresh = poutine.trace()(lambda: mp.sample("z", dist.Normal(0.0, 1.0))).get_trace()
    assert list(fresh.nodes) == ["_INPUT", "z", "_RETURN"]


def test_a_tracer_decorating_a_method_shows_each_objects_call():
    tracer = poutine.trace()

    class Model:
        def __init__(self, loc):
            self.loc = loc

        @tracer
        def __call__(self):
            return mp.sample("x", dist.Normal(self.loc, 1.0))

    Model(1.0)()
    assert tracer.trace.nodes["x"]["fn"].loc == 1.0
    Model(2.0)()
    assert tracer.trace.nodes["x"]["fn"].loc == 2.0


# ---- scale ------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [np.float32(0.5), np.float64(0.25), np.int64(2)])
def test_scale_accepts_numpy_scalars_as_pyro_does(pyro_ref, factor):
    import pyro.distributions as pdist

    def model(lib, d):
        with lib.poutine.scale(scale=factor):
            lib.sample("x", d.Normal(0.0, 1.0), obs=torch.tensor([0.3, -1.0]))

    expected = log_prob_sum(pyro_ref, model, pyro_ref, pdist)
    actual = log_prob_sum(mp, model, mp, dist)
    assert torch.equal(actual, expected)
    assert type(poutine.scale(factor).scale) in (int, float)  # positional, as a Python number


@pytest.mark.parametrize("bad", [np.float32(0.0), np.float64(-1.0), np.float32("nan"), np.inf])
def test_scale_rejects_bad_numpy_scalars(bad):
    with pytest.raises(ValueError, match="'scale'"):
        poutine.scale(scale=bad)
