"""Autoguides against Pyro's: the same model, the same seed, the same numbers.

For each autoguide class and each model (a positive and a simplex latent; a plated
hierarchical model; a subsampled plate; a ``PyroModule`` Bayesian regression), both libraries
build the guide, run SVI for 50 steps and must agree on the parameter names, the initial
values, the loss history and the parameter trajectory (parameters bitwise: the arithmetic is
the same; losses to a relative 1e-6, as Pyro sums them in float64), then, bitwise, on
``median``, ``quantiles`` and ``Predictive`` draws.
"""

import pytest
import torch

import miniprob
import miniprob.distributions
import miniprob.infer
import miniprob.infer.autoguide
import miniprob.nn
import miniprob.optim
import miniprob.poutine

pytest.importorskip("pyro")
import pyro  # noqa: E402
import pyro.distributions  # noqa: E402
import pyro.infer  # noqa: E402
import pyro.infer.autoguide  # noqa: E402
import pyro.nn  # noqa: E402
import pyro.optim  # noqa: E402
import pyro.poutine  # noqa: E402

LIBS = {"pyro": pyro, "miniprob": miniprob}
DATA = torch.tensor([0.3, -1.2, 2.0, 0.7, 1.1, -0.4, 0.9, 1.6])
GROUP = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
STEPS = 50


# ---- models ------------------------------------------------------------------------------


def positive_simplex(lib):
    dist = lib.distributions

    def model(data):
        s = lib.sample("s", dist.LogNormal(0.0, 1.0))
        p = lib.sample("p", dist.Dirichlet(torch.ones(3)))
        with lib.plate("data", len(data)):
            lib.sample("obs", dist.Normal(3.0 * p[..., 0] - p[..., 2], s), obs=data)

    return model


def hierarchical(lib):
    dist = lib.distributions

    def model(data):
        mu = lib.sample("mu", dist.Normal(0.0, 2.0))
        tau = lib.sample("tau", dist.HalfNormal(1.0))
        with lib.plate("groups", 3):
            theta = lib.sample("theta", dist.Normal(mu, tau))
            lib.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with lib.plate("data", len(data)):
            lib.sample("obs", dist.Normal(theta[GROUP], 1.0), obs=data)

    return model


def subsampled(lib):
    dist = lib.distributions

    def model(data):
        loc = lib.sample("loc", dist.Normal(0.0, 2.0))
        with lib.plate("data", len(data), subsample_size=3) as idx:
            z = lib.sample("z", dist.Normal(loc, 1.0))
            lib.sample("obs", dist.Normal(z, 0.5), obs=data[idx])

    return model


X = torch.linspace(-1.0, 1.0, 16).reshape(8, 2)


def regression(lib):
    """A ``PyroModule[nn.Linear]`` Bayesian regression (Pyro's tutorial model)."""
    dist = lib.distributions
    PyroModule, PyroSample = lib.nn.PyroModule, lib.nn.PyroSample

    class BayesianRegression(PyroModule):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.linear = PyroModule[torch.nn.Linear](in_features, out_features)
            self.linear.weight = PyroSample(
                dist.Normal(0.0, 1.0).expand([out_features, in_features]).to_event(2)
            )
            self.linear.bias = PyroSample(dist.Normal(0.0, 10.0).expand([out_features]).to_event(1))

        def forward(self, data):
            sigma = lib.sample("sigma", dist.Uniform(0.0, 10.0))
            mean = self.linear(X).squeeze(-1)
            with lib.plate("data", X.shape[0]):
                lib.sample("obs", dist.Normal(mean, sigma), obs=data)
            return mean

    return BayesianRegression(2, 1)


MODELS = {
    "positive_simplex": positive_simplex,
    "hierarchical": hierarchical,
    "subsampled": subsampled,
    "regression": regression,
}

# ---- guides ------------------------------------------------------------------------------


def guide_list(lib, model, model_name):
    ag = lib.infer.autoguide
    guide = ag.AutoGuideList(model)
    first = {"positive_simplex": "s", "hierarchical": "mu", "subsampled": "loc"}.get(
        model_name, "sigma"
    )
    guide.append(ag.AutoDelta(lib.poutine.block(model, expose=[first])))
    guide.append(ag.AutoNormal(lib.poutine.block(model, hide=[first])))
    return guide


GUIDES = {
    "AutoDelta": lambda lib, model: lib.infer.autoguide.AutoDelta(model),
    "AutoNormal": lambda lib, model: lib.infer.autoguide.AutoNormal(model),
    "AutoDiagonalNormal": lambda lib, model: lib.infer.autoguide.AutoDiagonalNormal(model),
    "AutoMultivariateNormal": lambda lib, model: lib.infer.autoguide.AutoMultivariateNormal(model),
    "AutoLowRankMultivariateNormal": (
        lambda lib, model: lib.infer.autoguide.AutoLowRankMultivariateNormal(model, rank=2)
    ),
    "AutoLaplaceApproximation": (
        lambda lib, model: lib.infer.autoguide.AutoLaplaceApproximation(model)
    ),
    "AutoGuideList": None,
}


def build(lib, model_name, guide_name):
    model = MODELS[model_name](lib)
    if guide_name == "AutoGuideList":
        return model, guide_list(lib, model, model_name)
    return model, GUIDES[guide_name](lib, model)


def snapshot(lib):
    return {name: value.detach().clone() for name, value in lib.get_param_store().items()}


def run(lib, model_name, guide_name, steps=STEPS):
    lib.clear_param_store()
    lib.set_rng_seed(0)
    model, guide = build(lib, model_name, guide_name)
    svi = lib.infer.SVI(model, guide, lib.optim.Adam({"lr": 0.02}), lib.infer.Trace_ELBO())
    losses, trajectory = [], []
    for _ in range(steps):
        losses.append(svi.step(DATA))
        trajectory.append(snapshot(lib))
    return model, guide, losses, trajectory


def assert_same(actual, expected, what):
    assert torch.equal(actual, expected), f"{what}: {actual} != {expected}"


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("guide_name", sorted(GUIDES))
def test_same_fit_as_pyro(model_name, guide_name):
    results = {}
    for name, lib in LIBS.items():
        model, guide, losses, trajectory = run(lib, model_name, guide_name)
        lib.set_rng_seed(1)
        extra = {}
        if guide_name != "AutoLaplaceApproximation":  # Pyro's has no median
            extra["median"] = guide.median(DATA)
        if guide_name not in ("AutoDelta", "AutoLaplaceApproximation", "AutoGuideList"):
            extra["quantiles"] = guide.quantiles([0.1, 0.5, 0.9], DATA)
        lib.set_rng_seed(2)
        predictive = lib.infer.Predictive(model, guide=guide, num_samples=4)
        extra["predictive"] = predictive(DATA)
        lib.clear_param_store()
        results[name] = (losses, trajectory, extra, [n for n, _ in guide.named_parameters()])
    (losses_p, traj_p, extra_p, names_p), (losses_m, traj_m, extra_m, names_m) = (
        results["pyro"],
        results["miniprob"],
    )
    assert names_m == names_p
    assert losses_m == pytest.approx(losses_p, rel=1e-6, abs=1e-6)
    for step, (params_p, params_m) in enumerate(zip(traj_p, traj_m, strict=True)):
        assert list(params_m) == list(params_p), f"step {step}"
        for name in params_p:
            assert_same(params_m[name], params_p[name], f"step {step}, param '{name}'")
    for kind in extra_p:
        assert extra_m[kind].keys() == extra_p[kind].keys(), kind
        for site in extra_p[kind]:
            assert_same(extra_m[kind][site], extra_p[kind][site], f"{kind} of '{site}'")
