"""Enumeration against Pyro: ``TraceEnum_ELBO`` losses and gradients, SVI trajectories and
``infer_discrete`` MAP assignments, the same program in both libraries under one seed.

Losses agree to a relative 1e-6, gradients and parameters to 1e-5 (the contraction adds the
same terms in another order).
"""

import sys
from pathlib import Path

import pytest
import torch

import miniprob
import miniprob.distributions
import miniprob.infer
import miniprob.infer.autoguide
import miniprob.optim
import miniprob.poutine

pytest.importorskip("pyro")
import pyro  # noqa: E402
import pyro.distributions  # noqa: E402
import pyro.infer  # noqa: E402
import pyro.infer.autoguide  # noqa: E402
import pyro.optim  # noqa: E402
import pyro.poutine  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import enum_bench  # noqa: E402

GMM_DATA = torch.tensor([0.0, 1.0, 10.0, 11.0, 12.0, -5.0, -6.0, 0.5])


def gmm(lib):
    """The tutorial's 3-component mixture: assignments enumerated, MAP guide for the rest."""
    guide = enum_bench.mixture_guide(lib, torch.tensor([-4.0, 0.5, 9.0]))
    return enum_bench.mixture_model(lib, 3), guide, (GMM_DATA,), 1


def global_discrete(lib):
    """A global enumerated variable that every observation in a plate depends on, and a
    reparameterized latent drawn by the guide."""
    dist = lib.distributions
    data = torch.tensor([1.2, 0.8, 1.5, 2.1, 0.3])

    def model(data):
        simplex = dist.constraints.simplex
        probs = lib.param("probs", torch.tensor([0.2, 0.5, 0.3]), constraint=simplex)
        locs = lib.param("locs", torch.tensor([-1.0, 0.5, 2.0]))
        z = lib.sample("z", dist.Categorical(probs), infer={"enumerate": "parallel"})
        scale = lib.sample("scale", dist.LogNormal(0.0, 1.0))
        with lib.plate("data", len(data)):
            lib.sample("obs", dist.Normal(locs[z], scale), obs=data)

    def guide(data):
        m = lib.param("m", torch.tensor(0.1))
        s = lib.param("s", torch.tensor(0.5), constraint=dist.constraints.positive)
        lib.sample("scale", dist.LogNormal(m, s))

    return model, guide, (data,), 1


def nested_plates(lib):
    """An enumerated site in an outer plate, one in a nested plate depending on it."""
    dist = lib.distributions
    data = torch.tensor([[0.1, 1.9, 2.2, -0.3], [1.1, 0.4, 2.5, 1.7], [-0.5, 0.2, 0.9, 2.8]])

    @lib.infer.config_enumerate
    def model(data):
        p = lib.param("p", torch.tensor(0.3), constraint=dist.constraints.unit_interval)
        trans = lib.param(
            "trans",
            torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.3, 0.6]]),
            constraint=dist.constraints.simplex,
        )
        locs = lib.param("locs", torch.tensor([0.0, 1.0, 2.0]))
        with lib.plate("groups", 3, dim=-2):
            g = lib.sample("g", dist.Bernoulli(p))
            with lib.plate("items", 4, dim=-1):
                z = lib.sample("z", dist.Categorical(trans[g.long()]))
                lib.sample("obs", dist.Normal(locs[z], 0.7), obs=data)

    def guide(data):
        pass

    return model, guide, (data,), 2


def hmm(lib, length=20):
    """A hidden Markov model over ``length`` steps of 3 sequences, chained with markov: the
    benchmark's HMM (``benchmarks/enum_bench.py``), smaller."""
    return enum_bench.hmm(lib, length, sequences=3)


def mixed_discrete(lib):
    """A model-enumerated site next to a guide-sampled one (score function) and a
    guide-enumerated one."""
    dist = lib.distributions
    data = torch.tensor([0.3, 2.2, 1.9, -0.4, 1.0, 2.6])

    def model(data):
        c = lib.sample("c", dist.Bernoulli(0.4))
        w = lib.sample("w", dist.Categorical(torch.tensor([0.5, 0.3, 0.2])))
        locs = lib.param("locs", torch.tensor([0.0, 2.0]))
        with lib.plate("data", len(data)):
            z = lib.sample("z", dist.Bernoulli(0.3 + 0.4 * c), infer={"enumerate": "parallel"})
            lib.sample("obs", dist.Normal(locs[z.long()] + 0.1 * w, 1.0), obs=data)

    def guide(data):
        pc = lib.param("pc", torch.tensor(0.5), constraint=dist.constraints.unit_interval)
        pw = lib.param("pw", torch.ones(3) / 3, constraint=dist.constraints.simplex)
        lib.sample("c", dist.Bernoulli(pc))
        lib.sample("w", dist.Categorical(pw), infer={"enumerate": "parallel"})

    return model, guide, (data,), 1


def subsampled_gmm(lib):
    """The mixture with the data plate subsampled: enumerated sites share its scale."""
    dist, K = lib.distributions, 2

    @lib.infer.config_enumerate
    def model(data):
        weights = lib.param("weights", torch.ones(K) / K, constraint=dist.constraints.simplex)
        locs = lib.param("locs", torch.tensor([0.0, 5.0]))
        with lib.plate("data", len(data), subsample_size=3) as idx:
            assignment = lib.sample("assignment", dist.Categorical(weights))
            lib.sample("obs", dist.Normal(locs[assignment], 2.0), obs=data[idx])

    def guide(data):
        pass

    return model, guide, (GMM_DATA,), 1


def onehot(lib):
    """An enumerated OneHotCategorical (a value with an event dim)."""
    dist = lib.distributions
    data = torch.tensor([0.1, 2.3, 1.1])

    def model(data):
        locs = lib.param("locs", torch.tensor([0.0, 1.0, 2.0]))
        with lib.plate("data", 3):
            z = lib.sample(
                "z", dist.OneHotCategorical(torch.ones(3) / 3), infer={"enumerate": "parallel"}
            )
            lib.sample("x", dist.Normal((z * locs).sum(-1), 1.0), obs=data)

    return model, lambda data: None, (data,), 1


def expanded(lib):
    """config_enumerate(expand=True): supports expanded over the batch."""
    dist = lib.distributions
    data = torch.tensor([0.1, 2.3, 1.1])

    @lib.infer.config_enumerate(expand=True)
    def model(data):
        locs = lib.param("locs", torch.tensor([0.0, 1.0, 2.0]))
        w = lib.param("w", torch.ones(3) / 3, constraint=dist.constraints.simplex)
        with lib.plate("data", 3):
            z = lib.sample("z", dist.Categorical(w))
            z2 = lib.sample("z2", dist.Bernoulli(0.3))
            lib.sample("x", dist.Normal(locs[z] + z2, 1.0), obs=data)

    return model, lambda data: None, (data,), 1


def masked(lib):
    """poutine.mask on sites that depend on an enumerated variable."""
    dist = lib.distributions
    data = torch.tensor([0.1, 2.3, 1.1])
    m = torch.tensor([True, False, True])

    @lib.infer.config_enumerate
    def model(data):
        locs = lib.param("locs", torch.tensor([0.0, 1.0, 2.0]))
        g = lib.sample("g", dist.Categorical(torch.ones(3) / 3))
        with lib.plate("data", 3), lib.poutine.mask(mask=m):
            lib.sample("x", dist.Normal(locs[g], 1.0), obs=data)

    return model, lambda data: None, (data,), 1


def seqplate(lib):
    """Enumerated sites in a sequential (iterated) plate."""
    dist = lib.distributions
    data = torch.tensor([0.1, 2.3, 1.1])

    @lib.infer.config_enumerate
    def model(data):
        locs = lib.param("locs", torch.tensor([0.0, 1.0, 2.0]))
        g = lib.sample("g", dist.Categorical(torch.ones(3) / 3))
        for i in lib.plate("data", 3):
            z = lib.sample(f"z_{i}", dist.Bernoulli(0.2 + 0.2 * g.float()))
            lib.sample(f"x_{i}", dist.Normal(locs[g] + z, 1.0), obs=data[i])

    return model, lambda data: None, (data,), 0


def hmm_example(lib):
    """The shape of Pyro's examples/hmm.py model_1: sequences at dim -2, tones at dim -1."""
    dist = lib.distributions
    T, N, D = 6, 3, 4
    seqs = (torch.rand(N, T, D, generator=torch.Generator().manual_seed(0)) < 0.3).float()

    @lib.infer.config_enumerate
    def model(seqs):
        probs_x = lib.param("px", 0.1 + 0.8 * torch.eye(2), constraint=dist.constraints.simplex)
        probs_y = lib.param(
            "py", torch.full((2, D), 0.3), constraint=dist.constraints.unit_interval
        )
        tones = lib.plate("tones", D, dim=-1)
        with lib.plate("sequences", N, dim=-2) as batch:
            x = 0
            for t in lib.markov(range(T)):
                x = lib.sample(f"x_{t}", dist.Categorical(probs_x[x]))
                with tones:
                    lib.sample(f"y_{t}", dist.Bernoulli(probs_y[x.squeeze(-1)]), obs=seqs[batch, t])

    return model, lambda seqs: None, (seqs,), 2


def sequential_guide(lib):
    """A guide that enumerates one site sequentially (a run per value) next to a parallel
    one and a reparameterized latent drawn anew in each run."""
    dist = lib.distributions
    data = torch.tensor([0.3, 2.2, 1.9, -0.4])

    def model(data):
        c = lib.sample("c", dist.Categorical(torch.tensor([0.2, 0.5, 0.3])))
        w = lib.sample("w", dist.Bernoulli(0.4))
        loc = lib.sample("loc", dist.Normal(0.0, 2.0))
        with lib.plate("data", len(data)):
            lib.sample("obs", dist.Normal(loc + c + 0.5 * w, 1.0), obs=data)

    def guide(data):
        pc = lib.param("pc", torch.ones(3) / 3, constraint=dist.constraints.simplex)
        pw = lib.param("pw", torch.tensor(0.5), constraint=dist.constraints.unit_interval)
        m = lib.param("m", torch.tensor(0.1))
        lib.sample("c", dist.Categorical(pc), infer={"enumerate": "sequential"})
        lib.sample("w", dist.Bernoulli(pw), infer={"enumerate": "parallel"})
        lib.sample("loc", dist.Normal(m, 0.5))

    return model, guide, (data,), 1


CASES = [
    gmm,
    global_discrete,
    nested_plates,
    hmm,
    mixed_discrete,
    subsampled_gmm,
    onehot,
    expanded,
    masked,
    seqplate,
    hmm_example,
    sequential_guide,
]


def unconstrained(lib, name):
    store = lib.get_param_store()
    return store._params[name] if lib is pyro else store.unconstrained(name)


def loss_and_grads(lib, build, **elbo_kwargs):
    lib.clear_param_store()
    lib.set_rng_seed(0)
    model, guide, args, mpn = build(lib)
    elbo = lib.infer.TraceEnum_ELBO(max_plate_nesting=mpn, **elbo_kwargs)
    loss = elbo.differentiable_loss(model, guide, *args)
    names = sorted(lib.get_param_store().keys())
    leaves = [unconstrained(lib, name) for name in names]
    grads = torch.autograd.grad(loss, leaves)
    lib.clear_param_store()
    return loss.item(), dict(zip(names, grads, strict=True))


@pytest.mark.parametrize("build", CASES, ids=lambda f: f.__name__)
def test_loss_and_every_gradient_equal_pyro(build):
    loss_p, grads_p = loss_and_grads(pyro, build)
    loss_m, grads_m = loss_and_grads(miniprob, build)
    assert loss_m == pytest.approx(loss_p, rel=1e-6, abs=1e-5)
    assert grads_m.keys() == grads_p.keys()
    for name, grad in grads_p.items():
        torch.testing.assert_close(grads_m[name], grad, atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("vectorize", [False, True], ids=["looped", "vectorized"])
def test_particles_equal_pyro(vectorize):
    kwargs = {"num_particles": 3, "vectorize_particles": vectorize}
    loss_p, grads_p = loss_and_grads(pyro, global_discrete, **kwargs)
    loss_m, grads_m = loss_and_grads(miniprob, global_discrete, **kwargs)
    assert loss_m == pytest.approx(loss_p, rel=1e-6, abs=1e-5)
    for name, grad in grads_p.items():
        torch.testing.assert_close(grads_m[name], grad, atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("build", [global_discrete, mixed_discrete], ids=lambda f: f.__name__)
def test_guessed_max_plate_nesting_equals_pyro(build):
    """Without max_plate_nesting both libraries run model and guide once to guess it (drawing
    the discrete sites), then enumerate: the same draws, the same loss."""
    losses = []
    for lib in (pyro, miniprob):
        lib.clear_param_store()
        lib.set_rng_seed(0)
        model, guide, args, mpn = build(lib)
        elbo = lib.infer.TraceEnum_ELBO()
        losses.append(elbo.differentiable_loss(model, guide, *args).item())
        assert elbo.max_plate_nesting == mpn
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)


def fit(lib, build, steps=5):
    lib.clear_param_store()
    lib.set_rng_seed(0)
    model, guide, args, mpn = build(lib)
    svi = lib.infer.SVI(
        model, guide, lib.optim.Adam({"lr": 0.05}), lib.infer.TraceEnum_ELBO(max_plate_nesting=mpn)
    )
    losses = [svi.step(*args) for _ in range(steps)]
    params = {k: v.detach().clone() for k, v in lib.get_param_store().items()}
    return losses, params, (model, guide, args, mpn)


@pytest.mark.parametrize("build", [gmm, mixed_discrete], ids=lambda f: f.__name__)
def test_svi_trajectory_equal_pyro(build):
    losses_p, params_p, _ = fit(pyro, build)
    losses_m, params_m, _ = fit(miniprob, build)
    assert losses_m == pytest.approx(losses_p, rel=1e-6, abs=1e-5)
    for name, value in params_p.items():
        torch.testing.assert_close(params_m[name], value, atol=1e-5, rtol=0, msg=name)


def map_assignment(lib, build, site_names):
    """Train a few steps, then the MAP of the enumerated sites given the guide's values."""
    _, _, (model, guide, args, mpn) = fit(lib, build)
    guide_trace = lib.poutine.trace(guide).get_trace(*args)
    trained = lib.poutine.replay(model, trace=guide_trace)
    decoded = lib.infer.infer_discrete(trained, first_available_dim=-1 - mpn, temperature=0)
    tr = lib.poutine.trace(decoded).get_trace(*args)
    lib.clear_param_store()
    return {name: tr.nodes[name]["value"] for name in site_names}


@pytest.mark.parametrize(
    "build, sites",
    [
        (gmm, ["assignment"]),
        (hmm, [f"x_{t}" for t in range(20)]),
        (nested_plates, ["g", "z"]),
        (global_discrete, ["z"]),
        (hmm_example, [f"x_{t}" for t in range(6)]),
    ],
    ids=["gmm", "hmm", "nested_plates", "global_discrete", "hmm_example"],
)
def test_infer_discrete_map_equals_pyro(build, sites):
    expected = map_assignment(pyro, build, sites)
    actual = map_assignment(miniprob, build, sites)
    for name in sites:
        assert torch.equal(actual[name], expected[name]), name


def test_pyro_gmm_tutorial_with_autodelta():
    """Pyro's Gaussian mixture tutorial as written (AutoDelta on the blocked model, its
    init_loc_fn and optimizer): the same losses, estimates and MAP assignments."""
    data = torch.tensor([0.0, 1.0, 10.0, 11.0, 12.0])
    K = 2

    def run(lib):
        model = enum_bench.mixture_model(lib, K)

        def init_loc_fn(site):
            if site["name"] == "weights":
                return torch.ones(K) / K
            if site["name"] == "scale":
                return (data.var() / 2).sqrt()
            return data[torch.multinomial(torch.ones(len(data)) / len(data), K)]

        lib.clear_param_store()
        lib.set_rng_seed(13)
        exposed = lib.poutine.block(model, expose=["weights", "locs", "scale"])
        guide = lib.infer.autoguide.AutoDelta(exposed, init_loc_fn=init_loc_fn)
        optim = lib.optim.Adam({"lr": 0.1, "betas": [0.8, 0.99]})
        elbo = lib.infer.TraceEnum_ELBO(max_plate_nesting=1)
        svi = lib.infer.SVI(model, guide, optim, elbo)
        losses = [svi.step(data) for _ in range(30)]
        estimates = {k: v.detach().clone() for k, v in guide(data).items()}
        trained = lib.poutine.replay(model, trace=lib.poutine.trace(guide).get_trace(data))
        decoded = lib.infer.infer_discrete(trained, first_available_dim=-2, temperature=0)
        assignment = lib.poutine.trace(decoded).get_trace(data).nodes["assignment"]["value"]
        lib.clear_param_store()
        return losses, estimates, assignment

    losses_p, estimates_p, assignment_p = run(pyro)
    losses_m, estimates_m, assignment_m = run(miniprob)
    assert losses_m == pytest.approx(losses_p, rel=1e-6, abs=1e-5)
    for name, value in estimates_p.items():
        torch.testing.assert_close(estimates_m[name], value, atol=1e-5, rtol=0, msg=name)
    assert torch.equal(assignment_m, assignment_p)


@pytest.mark.parametrize(
    "build, sites",
    [
        (gmm, ["assignment"]),
        (hmm, ["x_0", "x_9", "x_19"]),
        (nested_plates, ["g", "z"]),
        (global_discrete, ["z"]),
        (expanded, ["z", "z2"]),
    ],
    ids=["gmm", "hmm", "nested_plates", "global_discrete", "expanded"],
)
def test_compute_marginals_equal_pyro(build, sites):
    def marginals(lib):
        lib.clear_param_store()
        lib.set_rng_seed(0)
        model, guide, args, mpn = build(lib)
        elbo = lib.infer.TraceEnum_ELBO(max_plate_nesting=mpn)
        result = elbo.compute_marginals(model, guide, *args)
        lib.clear_param_store()
        return {name: (type(result[name]).__name__, result[name].probs) for name in sites}

    expected, actual = marginals(pyro), marginals(miniprob)
    for name in sites:
        assert actual[name][0] == expected[name][0], name
        torch.testing.assert_close(actual[name][1], expected[name][1], atol=1e-5, rtol=1e-5)
