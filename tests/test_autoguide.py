"""Autoguides: initialization strategies against Pyro's, the guides as ``nn.Module`` s, the
Laplace approximation against Pyro's, exact posteriors recovered, and bad input refused."""

import pytest
import torch
from test_autoguide_differential import DATA, MODELS

import miniprob
import miniprob.distributions as dist
from miniprob import poutine
from miniprob.infer import SVI, Trace_ELBO
from miniprob.infer.autoguide import (
    AutoCallable,
    AutoDelta,
    AutoDiagonalNormal,
    AutoGuideList,
    AutoLaplaceApproximation,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
    init_to_feasible,
    init_to_generated,
    init_to_mean,
    init_to_median,
    init_to_sample,
    init_to_uniform,
    init_to_value,
)
from miniprob.optim import Adam

pytest.importorskip("pyro")
import pyro  # noqa: E402
import pyro.infer.autoguide  # noqa: E402
import pyro.nn  # noqa: E402
import pyro.optim  # noqa: E402

LIBS = {"pyro": pyro, "miniprob": miniprob}


def initial_params(lib, model_name, make_guide):
    lib.clear_param_store()
    lib.set_rng_seed(0)
    model = MODELS[model_name](lib)
    guide = make_guide(lib, model)
    guide(DATA)
    params = {name: value.detach().clone() for name, value in lib.get_param_store().items()}
    lib.clear_param_store()
    return params, guide


STRATEGIES = {
    "median": lambda ag: ag.init_to_median(num_samples=7),
    "mean": lambda ag: ag.init_to_mean,
    "sample": lambda ag: ag.init_to_sample,
    "feasible": lambda ag: ag.init_to_feasible,
    "uniform": lambda ag: ag.init_to_uniform(radius=0.5),
    "value": lambda ag: ag.init_to_value(values={"mu": torch.tensor(0.3)}),
    "generated": lambda ag: ag.init_to_generated(
        generate=lambda: ag.init_to_value(values={"mu": torch.randn(())})
    ),
}


CASES = [(s, "hierarchical") for s in sorted(STRATEGIES)] + [
    (s, "regression") for s in sorted(STRATEGIES) if s not in ("value", "generated")
]


@pytest.mark.parametrize("strategy,model_name", CASES)
def test_initial_values_match_pyro(strategy, model_name):

    def make(lib, model):
        return lib.infer.autoguide.AutoDelta(model, STRATEGIES[strategy](lib.infer.autoguide))

    expected, _ = initial_params(pyro, model_name, make)
    actual, _ = initial_params(miniprob, model_name, make)
    assert list(actual) == list(expected)
    for name, value in expected.items():
        assert torch.equal(actual[name], value), name


def test_init_scale_and_names_match_pyro():
    def make(lib, model):
        return lib.infer.autoguide.AutoNormal(model, init_scale=0.25)

    expected, guide_p = initial_params(pyro, "hierarchical", make)
    actual, guide_m = initial_params(miniprob, "hierarchical", make)
    assert list(actual) == list(expected)
    assert all(torch.equal(actual[n], v) for n, v in expected.items())
    assert list(guide_m.state_dict()) == list(guide_p.state_dict())
    assert torch.allclose(actual["AutoNormal.scales.mu"], torch.tensor(0.25))


def test_guide_is_a_module_sharing_the_store_leaves():
    model = MODELS["positive_simplex"](miniprob)
    guide = AutoDiagonalNormal(model)
    guide(DATA)
    store = miniprob.get_param_store()
    leaves = {store.unconstrained(name) for name in store.keys()}
    assert set(guide.parameters()) == leaves
    assert sorted(guide.state_dict()) == ["loc", "scale_unconstrained"]
    guide.requires_grad_(False)
    assert not any(p.requires_grad for p in guide.parameters())


def test_subsampled_plate_keeps_full_size_parameters():
    model = MODELS["subsampled"](miniprob)
    guide = AutoNormal(model)
    values = guide(DATA)
    assert values["z"].shape == (3,)
    assert miniprob.param("AutoNormal.locs.z").shape == (len(DATA),)
    plates = guide._create_plates(DATA)
    assert plates["data"].subsample_size == 3 and plates["data"].size == len(DATA)


def test_create_plates_supplies_the_subsample():
    model = MODELS["subsampled"](miniprob)
    idx = torch.tensor([0, 5, 7])

    def create_plates(data):
        return miniprob.plate("data", len(data), subsample=idx)

    guide = AutoDelta(model, create_plates=create_plates)
    with poutine.trace() as tr:
        guide(DATA)
    assert torch.equal(tr.trace.nodes["data"]["value"], idx)
    assert tr.trace.nodes["z"]["value"].shape == (3,)


def hand_written(lib):
    """An AutoGuideList mixing AutoDelta for ``s`` and a hand-written guide for ``p``."""
    dist = lib.distributions
    model = MODELS["positive_simplex"](lib)

    def p_guide(data):
        conc = lib.param("conc", torch.ones(3), constraint=dist.constraints.positive)
        return {"p": lib.sample("p", dist.Dirichlet(conc))}

    guide = lib.infer.autoguide.AutoGuideList(model)
    guide.append(lib.infer.autoguide.AutoDelta(lib.poutine.block(model, expose=["s"])))
    guide.append(p_guide)
    return model, guide


def fit_and_predict(lib, build, steps=20):
    lib.clear_param_store()
    lib.set_rng_seed(0)
    model, guide = build(lib)
    svi = lib.infer.SVI(model, guide, lib.optim.Adam({"lr": 0.05}), lib.infer.Trace_ELBO())
    losses = [svi.step(DATA) for _ in range(steps)]
    params = {n: v.detach().clone() for n, v in lib.get_param_store().items()}
    lib.set_rng_seed(1)
    samples = lib.infer.Predictive(model, guide=guide, num_samples=3)(DATA)
    lib.set_rng_seed(2)
    latents = {k: v for k, v in samples.items() if k != "obs"}
    resampled = lib.infer.Predictive(model, posterior_samples=latents)(DATA)
    lib.clear_param_store()
    return losses, params, samples, resampled


def test_guide_list_with_hand_written_part_matches_pyro():
    expected = fit_and_predict(pyro, hand_written)
    actual = fit_and_predict(miniprob, hand_written)
    assert actual[0] == pytest.approx(expected[0], rel=1e-6)
    for got, want in zip(actual[1:], expected[1:], strict=True):
        assert list(got) == list(want)
        assert all(torch.equal(got[k], want[k]) for k in want)


def laplace(lib):
    lib.clear_param_store()
    lib.set_rng_seed(0)
    model = MODELS["regression"](lib)
    guide = lib.infer.autoguide.AutoLaplaceApproximation(model)
    svi = lib.infer.SVI(model, guide, lib.optim.Adam({"lr": 0.05}), lib.infer.Trace_ELBO())
    for _ in range(30):
        svi.step(DATA)
    gaussian = guide.laplace_approximation(DATA)
    lib.set_rng_seed(1)
    draws = lib.infer.Predictive(model, guide=gaussian, num_samples=4)(DATA)
    buffers = {n: b.clone() for n, b in gaussian.named_buffers()}
    lib.clear_param_store()
    return buffers, gaussian.median(DATA), draws


def test_laplace_approximation_matches_pyro():
    expected, actual = laplace(pyro), laplace(miniprob)
    for got, want in zip(actual, expected, strict=True):
        assert list(got) == list(want)
        for k in want:
            torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=1e-6)


# ---- convergence: a conjugate Gaussian linear regression ---------------------------------
NOISE, PRIOR = 0.5, 2.0
XS = torch.tensor([[1.0, -0.5], [0.3, 1.2], [-1.0, 0.8], [0.7, 0.1], [-0.2, -1.1], [1.5, 0.4]])
YS = XS @ torch.tensor([1.5, -0.7]) + NOISE * torch.tensor([0.3, -0.8, 0.5, 1.0, -0.2, 0.1])


def linear_model():
    w = miniprob.sample("w", dist.Normal(torch.zeros(2), PRIOR).to_event(1))
    with miniprob.plate("data", len(YS)):
        miniprob.sample("y", dist.Normal((XS * w).sum(-1), NOISE), obs=YS)


def exact_posterior():
    precision = XS.T @ XS / NOISE**2 + torch.eye(2) / PRIOR**2
    cov = torch.linalg.inv(precision)
    return cov @ XS.T @ YS / NOISE**2, cov


def test_laplace_recovers_the_exact_posterior():
    """The log joint is quadratic: at the optimum, the Laplace approximation is exact (to
    1e-4: Adam's last steps)."""
    miniprob.set_rng_seed(0)
    guide = AutoLaplaceApproximation(linear_model)
    svi = SVI(linear_model, guide, Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(600):
        svi.step()
    gaussian = guide.laplace_approximation()
    mean, cov = exact_posterior()
    posterior = gaussian.get_posterior()
    torch.testing.assert_close(posterior.mean, mean, atol=1e-4, rtol=0)
    torch.testing.assert_close(posterior.covariance_matrix, cov, atol=1e-5, rtol=1e-4)


def test_multivariate_normal_recovers_the_exact_posterior():
    """SVI's optimum is the exact posterior (the family contains it); a stochastic fit (16
    particles, a decaying learning rate) gets the mean to 0.01 and the covariance to 0.005
    (its entries are about 0.05: 10%; 0.003 and 0.003 measured)."""
    miniprob.set_rng_seed(0)
    guide = AutoMultivariateNormal(linear_model)
    elbo = Trace_ELBO(num_particles=16, vectorize_particles=True)
    optim = miniprob.optim.ClippedAdam({"lr": 0.05, "lrd": 0.99})
    svi = SVI(linear_model, guide, optim, elbo)
    for _ in range(300):
        svi.step()
    mean, cov = exact_posterior()
    posterior = guide.get_posterior()
    torch.testing.assert_close(posterior.mean.detach(), mean, atol=0.01, rtol=0)
    torch.testing.assert_close(posterior.covariance_matrix.detach(), cov, atol=0.005, rtol=0)


# ---- bad input ---------------------------------------------------------------------------
def discrete_model():
    miniprob.sample("loc", dist.Normal(0.0, 1.0))
    miniprob.sample("flip", dist.Bernoulli(0.3))


@pytest.mark.parametrize(
    "make",
    [
        AutoNormal,
        AutoDelta,
        AutoDiagonalNormal,
        lambda m: AutoNormal(m, init_loc_fn=init_to_sample),
    ],
)
def test_discrete_latent_is_an_error_naming_the_site(make):
    guide = make(discrete_model)
    with pytest.raises(ValueError, match="'flip' is discrete"):
        guide()
    assert len(miniprob.get_param_store()) == 0
    assert guide.prototype_trace is None


def test_enumerated_discrete_site_is_left_out():
    def model():
        miniprob.sample("loc", dist.Normal(0.0, 1.0))
        miniprob.sample("flip", dist.Bernoulli(0.3), infer={"enumerate": "parallel"})

    guide = AutoNormal(model)
    assert sorted(guide()) == ["loc"]


def test_latent_sites_changing_between_calls_is_an_error():
    def model(extra):
        miniprob.sample("a", dist.Normal(0.0, 1.0))
        if extra:
            miniprob.sample("b", dist.Normal(0.0, 1.0))

    svi = SVI(model, AutoNormal(model), Adam({"lr": 0.1}), Trace_ELBO())
    svi.step(False)
    with pytest.raises(ValueError, match=r"\['b'\] are not covered by the autoguide"):
        svi.step(True)


def test_latent_shape_changing_between_calls_is_an_error():
    def model(n):
        with miniprob.plate("data", n):
            miniprob.sample("z", dist.Normal(0.0, 1.0))

    guide = AutoDiagonalNormal(model)
    svi = SVI(model, guide, Adam({"lr": 0.1}), Trace_ELBO())
    svi.step(3)
    with pytest.raises(ValueError, match="plate 'data' has size 4 here but size 3"):
        svi.step(4)


def test_init_to_value_outside_the_support_is_an_error():
    model = MODELS["positive_simplex"](miniprob)
    guide = AutoNormal(model, init_loc_fn=init_to_value(values={"s": torch.tensor(-1.0)}))
    with pytest.raises(ValueError, match="site 's' is outside its support"):
        guide(DATA)
    assert guide.prototype_trace is None and len(miniprob.get_param_store()) == 0


def test_init_to_value_with_unknown_names_is_an_error():
    model = MODELS["positive_simplex"](miniprob)
    guide = AutoDelta(model, init_loc_fn=init_to_value(values={"sigma": torch.tensor(1.0)}))
    with pytest.raises(ValueError, match=r"names \['sigma'\], which are not latent sites"):
        guide(DATA)
    assert guide.prototype_trace is None and len(miniprob.get_param_store()) == 0


@pytest.mark.parametrize("qs", [[0.0, 0.5], [0.5, 1.0], [1.5], [-0.1]])
@pytest.mark.parametrize("make", [AutoNormal, AutoDiagonalNormal, AutoLowRankMultivariateNormal])
def test_quantiles_outside_the_unit_interval_are_an_error(make, qs):
    model = MODELS["hierarchical"](miniprob)
    guide = make(model)
    guide(DATA)
    with pytest.raises(ValueError, match=r"quantiles must lie in \(0, 1\)"):
        guide.quantiles(qs, DATA)


@pytest.mark.parametrize("init_scale", [0.0, -1.0, 1])
def test_bad_init_scale_is_an_error(init_scale):
    with pytest.raises(ValueError, match="init_scale"):
        AutoNormal(discrete_model, init_scale=init_scale)


def test_sequential_plate_is_an_error():
    def model():
        for i in miniprob.plate("seq", 2):
            miniprob.sample(f"z{i}", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="sequential plate 'seq'"):
        AutoNormal(model)()


def test_guide_list_refuses_parts_that_already_ran():
    model = MODELS["positive_simplex"](miniprob)
    part = AutoDelta(poutine.block(model, expose=["s"]))
    part(DATA)
    with pytest.raises(ValueError, match="already run"):
        AutoGuideList(model).append(part)


def test_auto_callable_median():
    model = MODELS["positive_simplex"](miniprob)
    guide = AutoGuideList(model)
    guide.append(AutoDelta(poutine.block(model, expose=["s"])))
    guide.append(
        AutoCallable(model, lambda data: None, median=lambda data: {"p": torch.ones(3) / 3})
    )
    guide(DATA)
    assert sorted(guide.median(DATA)) == ["p", "s"]


def test_strategies_work_alone():
    site = {"name": "x", "fn": dist.Gamma(2.0, 1.0).expand([3])}
    for init in (init_to_median, init_to_mean, init_to_sample, init_to_feasible, init_to_uniform):
        assert init(site).shape == (3,)
    assert init_to_generated(site).shape == (3,)
