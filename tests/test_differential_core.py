"""The same model in miniprob and in Pyro, under the same seed: identical site values, shapes,
scales, plates and log densities.

Each model is written once, as a function of a library module and its distributions module
(``model(pyro, dist)``), and traced under both (the micrograd pattern). miniprob records a
plate's index site only for subsampled plates, so only the sites present in both are compared,
and Pyro's extra sites must all be plate index sites.
"""

import contextlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import miniprob as mp
import miniprob.distributions as mdist

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

SEEDS = [0, 1, 2]


def trace_both(pyro, model, rng_seed, *args):
    import pyro.distributions as pdist

    pyro.clear_param_store()
    pyro.set_rng_seed(rng_seed)
    expected = pyro.poutine.trace(model).get_trace(pyro, pdist, *args)
    mp.clear_param_store()
    mp.set_rng_seed(rng_seed)
    actual = mp.poutine.trace(model).get_trace(mp, mdist, *args)
    return expected, actual


def frame_key(frame):
    return (frame.name, frame.dim, frame.size, frame.counter)


def assert_same_traces(expected, actual):
    extra = [n for n in expected.nodes if n not in actual.nodes]
    plates = {f.name for s in expected.nodes.values() for f in s.get("cond_indep_stack", ())}
    assert set(extra) <= plates, f"sites missing from miniprob's trace: {extra}"
    assert [n for n in actual.nodes if n not in expected.nodes] == []
    for name, site in actual.nodes.items():
        ref = expected.nodes[name]
        assert site["type"] == ref["type"], name
        if site["type"] not in ("sample", "param"):
            continue
        value, ref_value = site["value"], ref["value"]
        assert value.shape == ref_value.shape, name
        assert value.dtype == ref_value.dtype, name
        torch.testing.assert_close(value, ref_value, rtol=0, atol=0, msg=name)
        if site["type"] == "param":
            continue
        assert site["is_observed"] == ref["is_observed"], name
        if name in plates:  # a plate's index site; Pyro's has no batch_shape
            continue
        fn, ref_fn = site["fn"], ref["fn"]
        assert (fn.batch_shape, fn.event_shape) == (ref_fn.batch_shape, ref_fn.event_shape), name
        assert fn.has_rsample == ref_fn.has_rsample, name
        assert [frame_key(f) for f in site["cond_indep_stack"]] == [
            frame_key(f) for f in ref["cond_indep_stack"]
        ], name
        torch.testing.assert_close(
            torch.as_tensor(site["scale"], dtype=torch.float64),
            torch.as_tensor(ref["scale"], dtype=torch.float64),
            msg=name,
        )
        mask, ref_mask = site["mask"], ref["mask"]
        assert (mask is None) == (ref_mask is None), name
        if mask is not None:
            assert torch.equal(torch.as_tensor(mask), torch.as_tensor(ref_mask)), name
        site_sum = actual.log_prob_sum(lambda n, s: n == name)  # noqa: B023
        ref_sum = expected.log_prob_sum(lambda n, s: n == name)  # noqa: B023
        torch.testing.assert_close(site_sum, ref_sum, msg=name)
    torch.testing.assert_close(actual.log_prob_sum(), expected.log_prob_sum())
    ret, ref_ret = actual.nodes["_RETURN"]["value"], expected.nodes["_RETURN"]["value"]
    if isinstance(ref_ret, torch.Tensor):
        torch.testing.assert_close(ret, ref_ret, rtol=0, atol=0)


# ---- models -----------------------------------------------------------------------------------


def no_plates(pyro, dist):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    pyro.sample("coin", dist.Bernoulli(0.3))
    return pyro.sample("obs", dist.Normal(loc, scale), obs=torch.tensor(1.5))


def one_plate(pyro, dist):
    data = torch.linspace(-1.0, 2.0, 6)
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", 6):
        z = pyro.sample("z", dist.Normal(loc, 1.0))
        pyro.sample("obs", dist.Normal(z, 0.5), obs=data)
    return z


def nested_plates(pyro, dist):
    data = torch.arange(12.0).reshape(3, 4) / 10
    with pyro.plate("rows", 3, dim=-2):
        row = pyro.sample("row", dist.Normal(0.0, 1.0))
        with pyro.plate("cols", 4):
            cell = pyro.sample("cell", dist.Normal(row, 1.0))
            pyro.sample("obs", dist.Normal(cell, 1.0), obs=data)
    with pyro.plate("a", 2), pyro.plate("b", 5):  # auto dims
        pyro.sample("ab", dist.Gamma(2.0, 1.0))
    return cell


def subsampled(pyro, dist):
    data = torch.linspace(0.0, 1.0, 20)
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    with pyro.plate("data", 20, subsample_size=5) as idx:
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=data[idx])
    with pyro.plate("groups", 10, subsample=torch.tensor([7, 2, 3])) as groups:
        pyro.sample("g", dist.Beta(2.0, 2.0))
    with pyro.plate("outer", 6, subsample_size=2, dim=-2), pyro.plate("inner", 8, subsample_size=3):
        pyro.sample("both", dist.Normal(0.0, 1.0))
    return idx, groups


def masks(pyro, dist):
    keep = torch.tensor([True, False, True, True])
    with pyro.plate("data", 4):
        with pyro.poutine.mask(mask=keep):
            pyro.sample("handler_masked", dist.Normal(0.0, 1.0))
        pyro.sample("dist_masked", dist.Normal(0.0, 1.0).mask(~keep))
        with pyro.poutine.mask(mask=torch.tensor(False)):
            pyro.sample("both", dist.Normal(0.0, 1.0).mask(keep), obs=torch.ones(4))
    pyro.sample("all_masked", dist.Poisson(2.0).mask(False), obs=torch.tensor(1.0))


def scales(pyro, dist):
    with pyro.poutine.scale(scale=0.3):
        pyro.sample("a", dist.Normal(0.0, 1.0))
        with pyro.plate("data", 10, subsample_size=4), pyro.poutine.scale(scale=2.0):
            pyro.sample("b", dist.Normal(0.0, 1.0))
    with pyro.poutine.scale(scale=torch.tensor([0.5, 2.0, 4.0])), pyro.plate("p", 3):
        pyro.sample("c", dist.Exponential(1.0))


def to_event(pyro, dist):
    with pyro.plate("data", 3):
        a = pyro.sample("a", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("b", dist.Normal(torch.zeros(4, 2), 1.0).to_event(2))
        pyro.sample("c", dist.Dirichlet(torch.ones(3)))
        pyro.sample("mvn", dist.MultivariateNormal(torch.zeros(2), torch.eye(2)), obs=a)
    return a


def conditioned(pyro, dist):
    def model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("data", 3):
            x = pyro.sample("x", dist.Normal(z, 1.0))
        return pyro.sample("y", dist.Normal(x.sum(), 1.0))

    data = {"z": torch.tensor(0.7), "x": torch.tensor([0.1, -0.2, 0.3])}
    return pyro.poutine.condition(model, data=data)()


def iterated(pyro, dist):
    total = 0.0
    for i in pyro.plate("seq", 3):
        total = total + pyro.sample(f"x_{i}", dist.Normal(0.0, 1.0))
    with pyro.plate("batch", 2):
        for j in pyro.plate("steps", 4, subsample_size=2):
            pyro.sample(f"y_{j}", dist.Normal(total, 1.0))
    return total


def constrained_params(pyro, dist):
    constraints = dist.constraints
    loc = pyro.param("loc", torch.tensor([0.5, -0.5]))
    scale = pyro.param("scale", torch.tensor(1.5), constraint=constraints.positive)
    probs = pyro.param("probs", torch.tensor([0.2, 0.3, 0.5]), constraint=constraints.simplex)
    p = pyro.param("p", lambda: torch.tensor(0.25), constraint=constraints.unit_interval)
    low = pyro.param("low", torch.tensor(2.0), constraint=constraints.interval(1.0, 3.0))
    tril = pyro.param(
        "tril", torch.tensor([[1.0, 0.0], [0.5, 2.0]]), constraint=constraints.lower_cholesky
    )
    with pyro.plate("data", 6, subsample_size=3):
        local = pyro.param("local", torch.arange(12.0).reshape(6, 2), event_dim=1)
        pyro.sample("obs", dist.Normal(local, scale).to_event(1), obs=torch.zeros(3, 2))
    pyro.sample("c", dist.Categorical(probs))
    pyro.sample("b", dist.Bernoulli(p))
    pyro.sample("u", dist.Uniform(0.0, low))
    pyro.sample("mvn", dist.MultivariateNormal(loc, scale_tril=tril))
    return pyro.param("scale") * 2


def with_module(pyro, dist):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    pyro.module("net", net)
    x = torch.linspace(-1.0, 1.0, 15).reshape(5, 3)
    with pyro.plate("data", 5):
        mean = net(x).squeeze(-1)
        pyro.sample("obs", dist.Normal(mean, 1.0), obs=torch.ones(5))
    return mean


def deterministic_and_factor(pyro, dist):
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    pyro.deterministic("z2", z**2)
    pyro.factor("penalty", -(z**2))
    with pyro.plate("data", 3):
        w = pyro.sample("w", dist.Normal(z, 1.0))
        pyro.deterministic("w_vec", torch.stack([w, -w], -1), event_dim=1)
        pyro.factor("batched", w.abs().neg())
    return z


MODELS = [
    no_plates,
    one_plate,
    nested_plates,
    subsampled,
    masks,
    scales,
    to_event,
    conditioned,
    iterated,
    constrained_params,
    with_module,
    deterministic_and_factor,
]


@pytest.mark.parametrize("rng_seed", SEEDS)
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_same_trace_as_pyro(pyro_ref, model, rng_seed):
    expected, actual = trace_both(pyro_ref, model, rng_seed)
    assert_same_traces(expected, actual)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_same_gradients_as_pyro(pyro_ref, model):
    """The log density's gradient with respect to every param leaf agrees too."""
    expected, actual = trace_both(pyro_ref, model, 0)
    ref_params = dict(pyro_ref.get_param_store().named_parameters())
    params = dict(mp.get_param_store().named_parameters())
    assert set(params) == set(ref_params)
    if not params:
        return
    names = sorted(params)
    ref_grads = torch.autograd.grad(
        expected.log_prob_sum(), [ref_params[n] for n in names], allow_unused=True
    )
    grads = torch.autograd.grad(
        actual.log_prob_sum(), [params[n] for n in names], allow_unused=True
    )
    for name, g, ref_g in zip(names, grads, ref_grads, strict=True):
        assert (g is None) == (ref_g is None), name
        if g is not None:
            torch.testing.assert_close(g, ref_g, msg=name)


def test_replay_of_a_guide_matches_pyro(pyro_ref):
    """The ELBO's pattern: trace a guide, replay the model against it."""

    def run(pyro, dist):
        def guide():
            loc = pyro.param("q_loc", torch.tensor(0.3))
            z = pyro.sample("z", dist.Normal(loc, 1.0))
            with pyro.plate("data", 10, subsample_size=3):
                pyro.sample("local", dist.Normal(z, 1.0))

        def model():
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            with pyro.plate("data", 10, subsample_size=3) as idx:
                local = pyro.sample("local", dist.Normal(z, 1.0))
                pyro.sample("obs", dist.Normal(local, 1.0), obs=idx.float())

        guide_tr = pyro.poutine.trace(guide).get_trace()
        model_tr = pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_tr)).get_trace()
        return guide_tr, model_tr

    import pyro.distributions as pdist

    pyro_ref.set_rng_seed(5)
    ref_guide, ref_model = run(pyro_ref, pdist)
    mp.set_rng_seed(5)
    guide, model = run(mp, mdist)
    assert_same_traces(ref_guide, guide)
    assert_same_traces(ref_model, model)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(1, 3), min_size=1, max_size=3),
    st.lists(st.integers(1, 3), min_size=0, max_size=4),
    st.booleans(),
    st.integers(0, 2**16),
)
def test_broadcasting_matches_pyro(plate_sizes, batch_shape, explicit_dims, rng_seed):
    """Any batch shape under any nest of plates: the same shapes, values and log densities,
    or an error in both libraries."""
    pyro = pytest.importorskip("pyro")

    def model(pyro, dist):
        with contextlib.ExitStack() as stack:
            for i, size in enumerate(plate_sizes):
                dim = -1 - i if explicit_dims else None
                stack.enter_context(pyro.plate(f"p{i}", size, dim=dim))
            pyro.sample("x", dist.Normal(torch.zeros(batch_shape), 1.0))

    import pyro.distributions as pdist

    try:
        pyro.poutine.trace(model).get_trace(pyro, pdist)
    except ValueError:  # Pyro rejects the shape: so must miniprob, naming site and plate
        with pytest.raises(ValueError, match=r"'x' inside plate\('p\d'\)"):
            mp.poutine.trace(model).get_trace(mp, mdist)
        return
    assert_same_traces(*trace_both(pyro, model, rng_seed))
