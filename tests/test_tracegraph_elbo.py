"""``TraceGraph_ELBO`` against Pyro: the same loss and gradients under one seed (provenance
decides which costs each score function multiplies), baselines included."""

import pytest
import torch

import miniprob
import miniprob.distributions
import miniprob.infer
import miniprob.optim

pytest.importorskip("pyro")
import pyro  # noqa: E402
import pyro.distributions  # noqa: E402
import pyro.infer  # noqa: E402
import pyro.optim  # noqa: E402

DATA = torch.tensor([0.4, 1.3, -0.2, 2.2])


def chain(lib):
    """Non-reparameterized sites feeding later ones, a reparameterized site independent of
    them (its costs are not downstream), local discrete latents in a plate."""
    dist = lib.distributions

    def model():
        a = lib.sample("a", dist.Bernoulli(0.4))
        b = lib.sample("b", dist.Normal(0.0, 1.0))
        c = lib.sample("c", dist.Bernoulli(torch.sigmoid(b)))
        with lib.plate("data", len(DATA)):
            z = lib.sample("z", dist.Bernoulli(0.3 + 0.4 * a))
            lib.sample("obs", dist.Normal(z + c + b, 1.0), obs=DATA)

    def guide():
        pa = lib.param("pa", torch.tensor(0.5), constraint=dist.constraints.unit_interval)
        mb = lib.param("mb", torch.tensor(0.2))
        w = lib.param("w", torch.tensor(0.7))
        pz = lib.param(
            "pz", torch.full((len(DATA),), 0.5), constraint=dist.constraints.unit_interval
        )
        a = lib.sample("a", dist.Bernoulli(pa))
        b = lib.sample("b", dist.Normal(mb, 1.0))
        lib.sample("c", dist.Bernoulli(torch.sigmoid(w * a + b)))
        with lib.plate("data", len(DATA)):
            lib.sample("z", dist.Bernoulli(pz))

    return model, guide


def baselines(lib):
    """A decaying-average baseline on one site, a trained baseline value on another."""
    dist = lib.distributions

    def model():
        a = lib.sample("a", dist.Bernoulli(0.4))
        c = lib.sample("c", dist.Bernoulli(0.5))
        lib.sample("obs", dist.Normal(a + 2 * c, 1.0), obs=torch.tensor(1.5))

    def guide():
        pa = lib.param("pa", torch.tensor(0.5), constraint=dist.constraints.unit_interval)
        pc = lib.param("pc", torch.tensor(0.5), constraint=dist.constraints.unit_interval)
        bc = lib.param("bc", torch.tensor(0.1))
        lib.sample(
            "a",
            dist.Bernoulli(pa),
            infer={"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": 0.8}},
        )
        lib.sample("c", dist.Bernoulli(pc), infer={"baseline": {"baseline_value": bc}})

    return model, guide


CASES = [chain, baselines]


def unconstrained(lib, name):
    store = lib.get_param_store()
    return store._params[name] if lib is pyro else store.unconstrained(name)


def loss_and_grads(lib, build):
    lib.clear_param_store()
    lib.set_rng_seed(0)
    model, guide = build(lib)
    loss = lib.infer.TraceGraph_ELBO().loss_and_grads(model, guide)
    names = sorted(n for n in lib.get_param_store().keys() if not n.startswith("__baseline"))
    grads = {n: unconstrained(lib, n).grad.clone() for n in names}
    lib.clear_param_store()
    return loss, grads


@pytest.mark.parametrize("build", CASES, ids=lambda f: f.__name__)
def test_loss_and_gradients_equal_pyro(build):
    loss_p, grads_p = loss_and_grads(pyro, build)
    loss_m, grads_m = loss_and_grads(miniprob, build)
    assert loss_m == pytest.approx(loss_p, rel=1e-6)
    assert grads_m.keys() == grads_p.keys()
    for name, grad in grads_p.items():
        torch.testing.assert_close(grads_m[name], grad, atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("build", CASES, ids=lambda f: f.__name__)
def test_svi_trajectory_equals_pyro(build):
    def fit(lib):
        lib.clear_param_store()
        lib.set_rng_seed(0)
        model, guide = build(lib)
        svi = lib.infer.SVI(model, guide, lib.optim.Adam({"lr": 0.05}), lib.infer.TraceGraph_ELBO())
        losses = [svi.step() for _ in range(10)]
        # (Pyro leaves its average baseline in the store as a tensor with provenance.)
        params = {k: torch.tensor(v.tolist()) for k, v in lib.get_param_store().items()}
        if lib is miniprob:  # miniprob's store holds plain tensors
            assert all(type(v) is torch.Tensor for v in lib.get_param_store().values())
        lib.clear_param_store()
        return losses, params

    (losses_p, params_p), (losses_m, params_m) = fit(pyro), fit(miniprob)
    assert losses_m == pytest.approx(losses_p, rel=1e-6)
    assert params_m.keys() == params_p.keys()
    for name, value in params_p.items():
        torch.testing.assert_close(params_m[name], value, atol=1e-5, rtol=0, msg=name)


def test_unknown_baseline_option_is_an_error():
    dist = miniprob.distributions

    def guide():
        miniprob.sample("a", dist.Bernoulli(0.5), infer={"baseline": {"use_avg": True}})

    def model():
        miniprob.sample("a", dist.Bernoulli(0.5))

    with pytest.raises(ValueError, match=r"site 'a': unknown baseline options \['use_avg'\]"):
        miniprob.infer.TraceGraph_ELBO().loss_and_grads(model, guide)


def test_loss_leaves_the_average_baseline_alone():
    miniprob.clear_param_store()
    model, guide = baselines(miniprob)
    elbo = miniprob.infer.TraceGraph_ELBO()
    loss = elbo.loss(model, guide)
    assert isinstance(loss, float)
    assert "__baseline_avg_downstream_cost_a" not in miniprob.get_param_store().keys()
    elbo.loss_and_grads(model, guide)
    assert "__baseline_avg_downstream_cost_a" in miniprob.get_param_store().keys()
