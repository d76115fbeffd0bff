"""JitTrace_ELBO: the same draws, values and gradients as Trace_ELBO, one graph per signature."""

import warnings

import pytest
import torch

import miniprob as pyro
import miniprob.distributions as dist
from miniprob.infer import SVI, JitTrace_ELBO, Trace_ELBO
from miniprob.optim import Adam


def normal_model(data):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, scale), obs=data)


def normal_guide(data):
    m = pyro.param("m", torch.tensor(0.0))
    s = pyro.param("s", torch.tensor(1.0), constraint=dist.constraints.positive)
    pyro.sample("loc", dist.Normal(m, s))
    pyro.sample("scale", dist.LogNormal(pyro.param("t", torch.tensor(0.0)), 0.5))


def mixture_model(data):
    locs = pyro.sample("locs", dist.Normal(torch.zeros(2), 10.0).to_event(1))
    with pyro.plate("data", len(data), subsample_size=6) as idx:
        z = pyro.sample("z", dist.Bernoulli(0.5))
        pyro.sample("x", dist.Normal(locs[z.long()], 1.0), obs=data[idx])


def mixture_guide(data):
    loc = pyro.param("locs_loc", torch.tensor([-1.0, 1.0]))
    probs = pyro.param(
        "probs", 0.5 * torch.ones(len(data)), constraint=dist.constraints.unit_interval
    )
    pyro.sample("locs", dist.Normal(loc, 1.0).to_event(1))
    with pyro.plate("data", len(data), subsample_size=6) as idx:
        pyro.sample("z", dist.Bernoulli(probs[idx]))


def net_model(x):
    net = pyro.module("net", NET)
    with pyro.plate("batch", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(net(z), 1.0).to_event(1), obs=x)


def net_guide(x):
    with pyro.plate("batch", len(x)):
        loc = pyro.param("z_loc", torch.zeros(2))
        pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))


NET = torch.nn.Linear(2, 3)


def run(elbo, model, guide, batches, seed=0):
    """Train from a fresh store; the losses, the final parameters and the next RNG draw."""
    pyro.clear_param_store()
    svi = SVI(model, guide, Adam({"lr": 0.05}), elbo)
    torch.manual_seed(seed)
    losses = [svi.step(batch) for batch in batches]
    store = pyro.get_param_store()
    return losses, {k: store[k].detach().clone() for k in store.keys()}, torch.rand(3)


@pytest.mark.parametrize(
    "model, guide, data",
    [
        (normal_model, normal_guide, 2.0 + torch.randn(20)),
        (mixture_model, mixture_guide, torch.cat([torch.randn(8) - 2, torch.randn(8) + 2])),
        (net_model, net_guide, torch.randn(5, 3)),
    ],
    ids=["reparameterized", "subsampled-discrete", "module"],
)
def test_same_values_as_trace_elbo(model, guide, data):
    state = {k: v.clone() for k, v in NET.state_dict().items()}
    eager = run(Trace_ELBO(), model, guide, [data] * 8)
    NET.load_state_dict(state)
    jit = run(JitTrace_ELBO(ignore_jit_warnings=True), model, guide, [data] * 8)
    NET.load_state_dict(state)
    assert eager[0] == jit[0]
    assert eager[1].keys() == jit[1].keys()
    for name in eager[1]:
        assert torch.equal(eager[1][name], jit[1][name]), name
    assert torch.equal(eager[2], jit[2])  # the RNG is where eager mode leaves it


def test_particles_same_as_trace_elbo():
    data = 2.0 + torch.randn(20)
    for kwargs in ({"num_particles": 3}, {"num_particles": 3, "vectorize_particles": True}):
        eager = run(Trace_ELBO(**kwargs), normal_model, normal_guide, [data] * 4)
        jit = run(
            JitTrace_ELBO(ignore_jit_warnings=True, **kwargs),
            normal_model,
            normal_guide,
            [data] * 4,
        )
        assert eager[0] == jit[0]
        for name in eager[1]:
            assert torch.equal(eager[1][name], jit[1][name])


def test_new_batch_shape_compiles_again():
    data = 2.0 + torch.randn(23)
    batches = [data[:10], data[10:20], data[20:]]  # the last minibatch is smaller
    elbo = JitTrace_ELBO(ignore_jit_warnings=True)
    eager = run(Trace_ELBO(), normal_model, normal_guide, batches * 2)
    jit = run(elbo, normal_model, normal_guide, batches * 2)
    assert eager[0] == jit[0]
    for name in eager[1]:
        assert torch.equal(eager[1][name], jit[1][name])
    assert len(elbo.compile_seconds) == 2  # one graph per shape, reused in the second epoch


def test_loss_and_differentiable_loss_match_eager():
    data = 2.0 + torch.randn(20)
    pyro.clear_param_store()
    values = {}
    for elbo in (Trace_ELBO(), JitTrace_ELBO(ignore_jit_warnings=True)):
        torch.manual_seed(1)
        loss = elbo.loss(normal_model, normal_guide, data)
        diff = elbo.differentiable_loss(normal_model, normal_guide, data)
        diff.backward()
        grad = pyro.get_param_store().unconstrained("m").grad.clone()
        pyro.get_param_store().unconstrained("m").grad = None
        values[type(elbo)] = (loss, diff.item(), grad)
    eager, jit = values[Trace_ELBO], values[JitTrace_ELBO]
    assert eager[0] == jit[0] and eager[1] == jit[1]
    assert torch.equal(eager[2], jit[2])


def test_recompiles_after_the_store_is_cleared():
    data = 2.0 + torch.randn(20)
    elbo = JitTrace_ELBO(ignore_jit_warnings=True)
    run(elbo, normal_model, normal_guide, [data] * 2)
    losses, params, _ = run(elbo, normal_model, normal_guide, [data] * 2)  # a fresh store
    assert len(elbo.compile_seconds) == 2
    assert params["m"].ne(0.0)  # the new leaves were trained, not the stale ones


def test_no_torch_jit_and_no_warnings():
    # The capture is make_fx's, not torch.jit's: nothing deprecated, no tracer warnings to ignore.
    data = 2.0 + torch.randn(20)
    for elbo in (JitTrace_ELBO(ignore_jit_warnings=True), JitTrace_ELBO()):
        pyro.clear_param_store()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            elbo.loss_and_grads(normal_model, normal_guide, data)
            elbo.loss_and_grads(normal_model, normal_guide, data)
        assert len(elbo.compile_seconds) == 1


def test_nonfinite_loss_raises_naming_the_site():
    data = 2.0 + torch.randn(20)
    elbo = JitTrace_ELBO(ignore_jit_warnings=True)
    pyro.clear_param_store()
    elbo.loss_and_grads(normal_model, normal_guide, data)
    with torch.no_grad():
        pyro.get_param_store().unconstrained("m").fill_(float("nan"))
    with pytest.raises(ValueError, match="loc"):
        elbo.loss_and_grads(normal_model, normal_guide, data)


def kwargs_model(data, prior_scale=10.0, weights=None):
    loc = pyro.sample("loc", dist.Normal(0.0, prior_scale))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc * weights, 1.0), obs=data)


def kwargs_guide(data, prior_scale=10.0, weights=None):
    pyro.sample("loc", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))


def test_keyword_arguments_tensor_or_not():
    data = 2.0 + torch.randn(12)
    weights = torch.rand(12)
    results = []
    for elbo in (Trace_ELBO(), JitTrace_ELBO(ignore_jit_warnings=True)):
        pyro.clear_param_store()
        svi = SVI(kwargs_model, kwargs_guide, Adam({"lr": 0.05}), elbo)
        torch.manual_seed(0)
        losses = [svi.step(data, prior_scale=s, weights=weights * s) for s in (1.0, 1.0, 2.0, 2.0)]
        results.append((losses, pyro.param("m").detach().clone()))
    assert results[0][0] == results[1][0]
    assert torch.equal(results[0][1], results[1][1])
    assert len(elbo.compile_seconds) == 2  # prior_scale is baked in: one graph per value


def _randn_init_model(data):
    loc = pyro.sample("loc", dist.Normal(torch.zeros(3), 10.0).to_event(1))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, 1.0).to_event(1), obs=data)


def _randn_init_guide(data):
    # The init draws at every call, used or not: the graph must draw it too.
    m = pyro.param("m", torch.randn(3))
    pyro.sample("loc", dist.Normal(m, 1.0).to_event(1))


def test_random_ops_whose_result_goes_unused_still_draw():
    data = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    eager = run(Trace_ELBO(), _randn_init_model, _randn_init_guide, [data] * 4)
    jit = run(
        JitTrace_ELBO(ignore_jit_warnings=True), _randn_init_model, _randn_init_guide, [data] * 4
    )
    assert eager[0] == jit[0]
    assert torch.equal(eager[1]["m"], jit[1]["m"]) and torch.equal(eager[2], jit[2])


def test_a_list_argument_edited_in_place_compiles_again():
    def model(data, weights):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(loc * weights[0], 1.0), obs=data)

    def guide(data, weights):
        pyro.sample("loc", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))

    data = torch.ones(4)
    weights = [1.0]
    losses = {}
    for name, elbo in (("eager", Trace_ELBO()), ("jit", JitTrace_ELBO(ignore_jit_warnings=True))):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        weights[0] = 1.0
        first = elbo.loss(model, guide, data, weights)
        weights[0] = 3.0  # the same list object, another value baked into the graph
        pyro.set_rng_seed(0)
        losses[name] = (first, elbo.loss(model, guide, data, weights))
    assert losses["jit"] == pytest.approx(losses["eager"], rel=1e-6)
    assert losses["eager"][0] != losses["eager"][1]


def test_graphs_kept_are_bounded():
    elbo = JitTrace_ELBO(ignore_jit_warnings=True)
    elbo.MAX_GRAPHS = 3
    for n in range(1, 6):
        elbo.loss(normal_model, normal_guide, torch.ones(n))
    assert len(elbo._graphs) == 3
