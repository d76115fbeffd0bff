"""SVI(compile=True) with the autoguides, PyroModule models, TraceEnum_ELBO, TraceGraph_ELBO and
the DistributedOptimizer: what compiles gives eager's numbers on the same draws (guides without
randomness) and eager's posterior; what cannot be captured runs eagerly with a CompileWarning.

All but one test run the captured program on the ``"aten"`` backend (no TorchInductor compile);
the last one compiles ``hier`` with ``AutoDelta`` through TorchInductor once.
"""

import sys
import warnings
from pathlib import Path

import pytest
import torch

import miniprob as pyro
import miniprob.distributions as dist
from miniprob.infer import (
    SVI,
    JitTraceEnum_ELBO,
    JitTraceGraph_ELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    autoguide,
    config_enumerate,
)
from miniprob.infer.compiled import CompileWarning
from miniprob.nn import PyroModule, PyroSample
from miniprob.optim import Adam, DistributedOptimizer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from models import hier  # noqa: E402

HIER = hier(pyro)
AUTOGUIDES = [
    "AutoNormal",
    "AutoDiagonalNormal",
    "AutoMultivariateNormal",
    "AutoLowRankMultivariateNormal",
    "AutoDelta",
    "AutoLaplaceApproximation",
]


def fit(model, guide, elbo, args, steps, compile, optim=None, seed=0):
    """The losses of ``steps`` steps and the SVI (fresh store, one seed); CompileWarning is an
    error unless the caller catches it."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    svi = SVI(model, guide, optim or Adam({"lr": 0.01}), elbo, compile=compile)
    return [svi.step(*args) for _ in range(steps)], svi


def fused(svi):
    return [program.fused for program in svi._compiled._programs.values()]


@pytest.fixture(autouse=True)
def compile_warnings_are_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)
        yield


# ---- autoguides ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", AUTOGUIDES)
def test_every_autoguide_on_hier_compiles_whole(name):
    guide = getattr(autoguide, name)(HIER.model)
    losses, svi = fit(HIER.model, guide, Trace_ELBO(), HIER.args, 4, "aten")
    assert fused(svi) == [True]  # guide, model, ELBO, gradients and Adam in one program
    assert all(torch.isfinite(torch.tensor(losses)))


@pytest.mark.parametrize("name", ["AutoDelta", "AutoLaplaceApproximation"])
def test_a_guide_without_draws_gives_the_eager_losses_and_parameters(name):
    def run(compile):
        guide = getattr(autoguide, name)(HIER.model)
        losses, _ = fit(HIER.model, guide, Trace_ELBO(), HIER.args, 12, compile)
        store = pyro.get_param_store()
        return losses, {k: store[k].detach().clone() for k in store.keys()}

    (eager, eager_params), (compiled, compiled_params) = run(False), run("aten")
    assert compiled == pytest.approx(eager, rel=1e-5)
    for key, value in eager_params.items():
        torch.testing.assert_close(compiled_params[key], value, rtol=1e-5, atol=1e-6)


DATA = 3.0 + torch.randn(100, generator=torch.Generator().manual_seed(0))


def conjugate_model(data):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)


def test_compiled_autonormal_reaches_the_conjugate_posterior_of_eager():
    precision = 1 / 10.0**2 + len(DATA)
    mean, sd = DATA.sum().item() / precision, precision**-0.5

    def posterior(compile):
        guide = autoguide.AutoNormal(conjugate_model)
        svi_losses, svi = fit(conjugate_model, guide, Trace_ELBO(), (DATA,), 1, compile)
        trail = []
        for i in range(1200):
            svi.step(DATA)
            if i >= 800:  # the iterates' average over the last 400 steps
                trail.append([pyro.param(f"AutoNormal.{k}.loc").item() for k in ("locs", "scales")])
        return svi, torch.tensor(trail).mean(0)

    svi, (m, s) = posterior("aten")
    assert fused(svi) == [True]
    _, (m_eager, s_eager) = posterior(False)
    assert m.item() == pytest.approx(mean, abs=0.03)
    assert s.item() == pytest.approx(sd, rel=0.2)
    assert m.item() == pytest.approx(m_eager.item(), abs=0.03)
    assert s.item() == pytest.approx(s_eager.item(), rel=0.2)


class BayesianRegression(PyroModule):
    def __init__(self) -> None:
        super().__init__()
        self.linear = PyroModule[torch.nn.Linear](3, 1)
        self.linear.weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, 3]).to_event(2))
        self.linear.bias = PyroSample(dist.Normal(0.0, 1.0).expand([1]).to_event(1))

    def forward(self, x, y=None):
        mean = self.linear(x).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mean, 0.5), obs=y)
        return mean


def test_a_pyromodule_regression_compiles_and_reaches_the_conjugate_posterior_mean():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3 + 0.5 * torch.randn(200, generator=g)
    model = BayesianRegression()
    guide = autoguide.AutoDiagonalNormal(model)
    _, svi = fit(model, guide, Trace_ELBO(), (x, y), 1500, "aten", Adam({"lr": 0.02}))
    assert fused(svi) == [True]
    # Known noise scale: (weight, bias) | data is Normal with a closed-form mean.
    features = torch.cat([x, torch.ones(200, 1)], 1)
    precision = torch.eye(4) + features.T @ features / 0.25
    mean = torch.linalg.solve(precision, features.T @ y / 0.25)
    torch.testing.assert_close(guide.median()["linear.weight"][0], mean[:3], atol=0.03, rtol=0)
    torch.testing.assert_close(guide.median()["linear.bias"], mean[3:], atol=0.03, rtol=0)


# ---- TraceEnum_ELBO ----------------------------------------------------------------------------
MIXTURE = torch.cat([torch.randn(30) - 3.0, torch.randn(30) + 3.0])


@config_enumerate
def mixture(data):
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    locs = pyro.sample("locs", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    with pyro.plate("data", len(data)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[z], 1.0), obs=data)


def mixture_guide(data):  # MAP of the global sites; z is summed out
    weights = pyro.param("weights_q", torch.ones(2) / 2, constraint=dist.constraints.simplex)
    pyro.sample("weights", dist.Delta(weights).to_event(1))
    pyro.sample("locs", dist.Delta(pyro.param("locs_q", torch.tensor([-1.0, 1.0]))).to_event(1))


@pytest.mark.parametrize("elbo", [TraceEnum_ELBO, JitTraceEnum_ELBO])
def test_an_enumerated_mixture_compiles_and_gives_the_eager_losses(elbo):
    eager, _ = fit(
        mixture, mixture_guide, TraceEnum_ELBO(max_plate_nesting=1), (MIXTURE,), 30, False
    )
    compiled, svi = fit(mixture, mixture_guide, elbo(max_plate_nesting=1), (MIXTURE,), 30, "aten")
    assert fused(svi) == [True]
    assert compiled == pytest.approx(eager, rel=1e-5)


def test_jit_trace_enum_elbo_replays_its_captured_graph():
    elbo = JitTraceEnum_ELBO(max_plate_nesting=1)
    jit, _ = fit(mixture, mixture_guide, elbo, (MIXTURE,), 10, False)
    eager, _ = fit(
        mixture, mixture_guide, TraceEnum_ELBO(max_plate_nesting=1), (MIXTURE,), 10, False
    )
    assert len(elbo.compile_seconds) == 1
    assert jit == pytest.approx(eager, rel=1e-6)


def three_way(data):
    locs = pyro.sample("locs", dist.Normal(0.0, 10.0).expand([3]).to_event(1))
    with pyro.plate("data", len(data)):
        z = pyro.sample("z", dist.Categorical(torch.tensor([0.3, 0.7, 0.0])))
        pyro.sample("obs", dist.Normal(locs[z], 1.0), obs=data)


def three_way_guide(data):
    pyro.sample(
        "locs", dist.Delta(pyro.param("locs_q", torch.tensor([-1.0, 1.0, 0.0]))).to_event(1)
    )
    with pyro.plate("data", len(data)):
        # Enumerated in the guide, one value without mass: its cost (-inf under the model) is
        # left out, which the capture does without reading the weights.
        guide_probs = torch.tensor([0.5, 0.5, 0.0])
        pyro.sample("z", dist.Categorical(guide_probs), infer={"enumerate": "parallel"})


def test_guide_side_enumeration_with_zero_weights_compiles_to_the_eager_losses():
    args = (MIXTURE[:12],)
    eager, _ = fit(three_way, three_way_guide, TraceEnum_ELBO(max_plate_nesting=1), args, 10, False)
    compiled, svi = fit(
        three_way, three_way_guide, TraceEnum_ELBO(max_plate_nesting=1), args, 10, "aten"
    )
    assert fused(svi) == [True]
    assert all(torch.isfinite(torch.tensor(compiled)))
    assert compiled == pytest.approx(eager, rel=1e-5)
    assert torch.isfinite(pyro.param("locs_q")).all()  # no nan gradient through the zeros


# ---- TraceGraph_ELBO ---------------------------------------------------------------------------
def test_trace_graph_elbo_with_reparameterized_sites_compiles_whole():
    def run(compile):
        guide = autoguide.AutoDelta(HIER.model)
        return fit(HIER.model, guide, TraceGraph_ELBO(), HIER.args, 8, compile)

    (eager, _), (compiled, svi) = run(False), run("aten")
    assert fused(svi) == [True]
    assert compiled == pytest.approx(eager, rel=1e-5)


def coin_model(data):
    p = pyro.sample("p", dist.Beta(2.0, 2.0))
    k = pyro.sample("k", dist.Bernoulli(p))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(2.0 * k, 1.0), obs=data)


def coin_guide(data):
    a = pyro.param("a", torch.tensor(2.0), constraint=dist.constraints.positive)
    pyro.sample("p", dist.Beta(a, 2.0))
    q = pyro.param("q", torch.tensor(0.5), constraint=dist.constraints.unit_interval)
    baseline = {"use_decaying_avg_baseline": True}
    pyro.sample("k", dist.Bernoulli(q), infer={"baseline": baseline})


def two_coins_model(data):
    # Each coin explains its own half of the data: a coin's score function multiplies only the
    # costs downstream of it (Rao-Blackwellization), which a capture takes from the eager step.
    for i in range(2):
        k = pyro.sample(f"k{i}", dist.Bernoulli(0.5))
        with pyro.plate(f"data{i}", len(data[i])):
            pyro.sample(f"obs{i}", dist.Normal(2.0 * k, 1.0), obs=data[i])


def two_coins_guide(data):
    for i in range(2):
        q = pyro.param(f"q{i}", torch.tensor(0.5), constraint=dist.constraints.unit_interval)
        pyro.sample(f"k{i}", dist.Bernoulli(q), infer={"baseline": {"baseline_value": 1.0}})


@pytest.mark.parametrize("elbo", [TraceGraph_ELBO, JitTraceGraph_ELBO])
def test_trace_graph_elbo_with_score_function_sites_compiles_whole(elbo):
    draws = [torch.randn(10, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    data = (draws[0] + 2.0, draws[1])

    def run(elbo, compile):
        optim = Adam({"lr": 0.1})
        return fit(two_coins_model, two_coins_guide, elbo, (data,), 100, compile, optim, seed=3)

    eager, _ = run(TraceGraph_ELBO(), False)
    eager_q = [pyro.param(f"q{i}").item() for i in range(2)]
    compiled, svi = run(elbo(), "aten")
    assert fused(svi) == [True]
    # The captured program replays torch's draws in the eager order (the "aten" backend): the
    # same draws, so the same Rao-Blackwellized gradients and the same trajectory.
    assert compiled == pytest.approx(eager, rel=1e-5)
    assert [pyro.param(f"q{i}").item() for i in range(2)] == pytest.approx(eager_q, abs=1e-5)
    assert eager_q[0] > 0.7 and eager_q[1] < 0.2  # the first coin came up heads, the second tails


@pytest.mark.parametrize("elbo", [TraceGraph_ELBO, JitTraceGraph_ELBO])
def test_trace_graph_elbo_with_a_decaying_baseline_falls_back_to_eager(elbo):
    data = torch.randn(20) + 2.0
    eager, _ = fit(coin_model, coin_guide, TraceGraph_ELBO(), (data,), 6, False)
    eager_baseline = pyro.param("__baseline_avg_downstream_cost_k").detach().clone()
    with pytest.warns(CompileWarning, match=r"runs eagerly.*'k'.*decaying-average baseline"):
        compiled, svi = fit(coin_model, coin_guide, elbo(), (data,), 6, True)
    assert compiled == eager  # every step eager: the same draws, the same numbers
    baseline = pyro.param("__baseline_avg_downstream_cost_k").detach()
    torch.testing.assert_close(baseline, eager_baseline, rtol=0, atol=0)  # no fake in the store


# ---- DistributedOptimizer ----------------------------------------------------------------------


def test_a_distributed_optimizer_steps_eagerly_on_compiled_gradients(group_of_one, monkeypatch):
    calls = []
    call = DistributedOptimizer.__call__
    monkeypatch.setattr(
        DistributedOptimizer,
        "__call__",
        lambda self, *a, **k: calls.append(1) or call(self, *a, **k),
    )

    def run(compile):
        guide = autoguide.AutoDelta(HIER.model)
        optim = DistributedOptimizer(Adam({"lr": 0.01}))
        return fit(HIER.model, guide, Trace_ELBO(), HIER.args, 6, compile, optim)

    (eager, _), (compiled, svi) = run(False), run("aten")
    # The gradients come from the program; the optimizer's own call (the all-reduce, with more
    # than one rank) steps them at every step.
    assert fused(svi) == [False]
    assert len(calls) == 12
    assert compiled == pytest.approx(eager, rel=1e-5)

    failed = []
    monkeypatch.setattr(DistributedOptimizer, "_step_failed", lambda self, e: failed.append(e))
    bad = HIER.args[0].clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="y"):
        svi.step(bad)  # a new signature: its first step is eager
    with pytest.raises(ValueError, match="y"):
        svi.step(bad)  # now the program's: the other ranks hear of it too
    assert len(failed) == 2


# ---- one TorchInductor compile -----------------------------------------------------------------
def test_inductor_compiles_hier_with_autodelta_to_the_eager_losses():
    def run(compile):
        guide = autoguide.AutoDelta(HIER.model)
        return fit(HIER.model, guide, Trace_ELBO(), HIER.args, 10, compile)

    (eager, _), (compiled, svi) = run(False), run(True)
    assert fused(svi) == [True]
    assert compiled == pytest.approx(eager, rel=1e-4)
