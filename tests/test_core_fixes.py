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
        else:  # recorded unchecked, checked when scored (as in Pyro)
            conditioned = poutine.condition(
                lambda: mp.sample("x", dist.Normal(0.0, 1.0)), data={"x": obs}
            )
            poutine.trace(conditioned).get_trace().log_prob_sum()


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
    conditioned = poutine.condition(
        lambda: mp.sample("x", dist.MultivariateNormal(torch.zeros(2), torch.eye(2))),
        data={"x": torch.zeros(3, 1)},
    )
    with pytest.raises(ValueError, match=r"'x'.*event_shape"):  # checked when scored
        poutine.trace(conditioned).get_trace().compute_log_prob()


def test_the_event_shape_is_checked_for_a_cached_tensor_too():
    data = torch.zeros(2)
    mp.sample("x", dist.MultivariateNormal(torch.zeros(2), torch.eye(2)), obs=data)
    with pytest.raises(ValueError, match="'x'.*event_shape"):
        mp.sample("x", dist.MultivariateNormal(torch.zeros(3), torch.eye(3)), obs=data)


def test_the_event_shape_inside_a_to_event_is_checked_as_in_pyro(pyro_ref):
    import pyro.distributions as pdist

    def model(lib, d):
        mvn = d.MultivariateNormal(torch.zeros(3, 2), torch.eye(2)).to_event(1)
        lib.sample("x", mvn, obs=torch.zeros(3, 1))

    with pytest.raises(ValueError, match="right-most size of value must match event_shape"):
        log_prob_sum(pyro_ref, model, pyro_ref, pdist)
    with pytest.raises(ValueError, match=r"'x'.*MultivariateNormal with event_shape \(2,\)"):
        model(mp, dist)


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


# ---- ParamStore state -------------------------------------------------------------------------


def store_snapshot(store):
    """Everything a failed call must leave as it was: names, leaves, values, constraints."""
    return (
        [(name, store.unconstrained(name), store.get_constraint(name)) for name in store],
        [store.unconstrained(name).detach().clone() for name in store],
        dict(store._param_to_name),
        dict(store._transforms),
    )


def assert_unchanged(store, before):
    after = store_snapshot(store)
    assert [(n, id(u), id(c)) for n, u, c in after[0]] == [
        (n, id(u), id(c)) for n, u, c in before[0]
    ]
    assert all(torch.equal(a, b) for a, b in zip(after[1], before[1], strict=True))
    assert after[2] == before[2] and after[3] == before[3]


def filled_store():
    store = mp.get_param_store()
    mp.param("loc", torch.tensor([0.1, -0.2]))
    mp.param("scale", torch.tensor(1.5), constraint=dist.constraints.positive)
    return store


BAD_ENTRIES = {
    "not a tensor": ("bad", "abc", dist.constraints.real, "'bad'.*not a tensor"),
    "no transform for the shape": (
        "bad",
        torch.zeros(3),
        dist.constraints.lower_cholesky,
        "'bad'.*shape \\(3,\\)",
    ),
    "no constraint": ("bad", torch.zeros(1), None, "'bad'.*no constraint"),
}


@pytest.mark.parametrize("case", BAD_ENTRIES)
def test_a_failed_set_state_leaves_the_store_exactly_as_it_was(case):
    store = filled_store()
    name, value, constraint, message = BAD_ENTRIES[case]
    # A good entry replacing "loc" and a new one come first: they must not be applied either.
    state = {
        "params": {"loc": torch.ones(2), "new": torch.ones(1), name: value},
        "constraints": {"loc": dist.constraints.real, "new": dist.constraints.real},
    }
    if constraint is not None:
        state["constraints"][name] = constraint
    before = store_snapshot(store)
    with pytest.raises(ValueError, match=message):
        store.set_state(state)
    assert_unchanged(store, before)


def test_a_failed_load_leaves_the_store_exactly_as_it_was(tmp_path):
    store = filled_store()
    path = tmp_path / "params.pt"
    torch.save(
        {
            "params": {"loc": torch.ones(2), "bad": torch.zeros(3)},
            "constraints": {"loc": dist.constraints.real, "bad": dist.constraints.lower_cholesky},
        },
        path,
    )
    before = store_snapshot(store)
    with pytest.raises(ValueError, match="'bad'"):
        store.load(path)
    assert_unchanged(store, before)


def test_set_state_takes_numbers_and_integer_tensors_as_init_values_are_taken():
    store = mp.get_param_store()
    store.set_state(
        {
            "params": {"count": torch.tensor([1, 2]), "rate": 0.5},
            "constraints": {"count": dist.constraints.real, "rate": dist.constraints.real},
        }
    )
    for name, expected in (("count", [1.0, 2.0]), ("rate", 0.5)):
        leaf = store.unconstrained(name)
        assert leaf.dtype == torch.get_default_dtype() and leaf.is_leaf and leaf.requires_grad
        assert leaf.tolist() == expected
        assert store.param_name(leaf) == name


def test_set_state_and_load_merge_into_the_store_as_in_pyro(pyro_ref, tmp_path):
    for lib in (pyro_ref, mp):
        lib.clear_param_store()
        lib.param("saved", torch.tensor(1.0))
        lib.get_param_store().save(tmp_path / f"{lib.__name__}.pt")
        lib.param("saved").unconstrained().data.fill_(3.0)
        lib.param("kept", torch.tensor(2.0))
        lib.get_param_store().load(tmp_path / f"{lib.__name__}.pt")
    store, ref = mp.get_param_store(), pyro_ref.get_param_store()
    assert list(store.keys()) == list(ref.keys()) == ["saved", "kept"]
    for name in store.keys():
        assert store[name].item() == ref[name].item()
    old_leaves = [u for u in store._param_to_name if store._param_to_name[u] == "saved"]
    assert old_leaves == [store.unconstrained("saved")]  # the replaced leaf is forgotten


def test_load_checkpoint_still_replaces_the_store(tmp_path):
    from miniprob.checkpoint import load_checkpoint, save_checkpoint

    mp.param("saved", torch.tensor(1.0))
    save_checkpoint(tmp_path / "run.ckpt")
    mp.param("extra", torch.tensor(2.0))
    load_checkpoint(tmp_path / "run.ckpt")
    assert list(mp.get_param_store().keys()) == ["saved"]


@pytest.mark.parametrize("state", [[1, 2], {"params": {}}])
def test_a_malformed_state_is_a_value_error(state):
    store = filled_store()
    before = store_snapshot(store)
    with pytest.raises(ValueError, match="'params' and 'constraints'"):
        store.set_state(state)
    assert_unchanged(store, before)
