"""``poutine.reparam`` with ``LocScaleReparam`` and ``TransformReparam``, differentially
against Pyro: the same auxiliary sites, values, parameters, log densities and ELBO gradients
under one seed."""

import pytest
import torch

import miniprob as mp
import miniprob.distributions as mdist
from miniprob.infer.reparam import LocScaleReparam, Reparam, TransformReparam

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

pyro = pytest.importorskip("pyro")
import pyro.distributions as pdist  # noqa: E402
import pyro.infer.reparam as preparam  # noqa: E402

LIBS = [(pyro, pdist, preparam), (mp, mdist, mp.infer.reparam)]


def sites(tr):
    return {n: s for n, s in tr.nodes.items() if s["type"] in ("sample", "param") and n != "groups"}


def trace_both(build, seed=0):
    traces = []
    for lib, dist, reparams in LIBS:
        lib.clear_param_store()
        lib.set_rng_seed(seed)
        tr = lib.poutine.trace(build(lib, dist, reparams)).get_trace()
        tr.compute_log_prob()
        traces.append(tr)
    return traces


def assert_same(expected, actual):
    ref, got = sites(expected), sites(actual)
    assert list(got) == list(ref)
    for name, site in got.items():
        torch.testing.assert_close(site["value"], ref[name]["value"], rtol=0, atol=0)
        if site["type"] == "sample":
            assert site["is_observed"] == ref[name]["is_observed"], name
            torch.testing.assert_close(site["log_prob"], ref[name]["log_prob"], rtol=0, atol=0)


def family(dist, name):
    loc, scale = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.5, 0.3, 4.0])
    return {
        "Normal": lambda: dist.Normal(loc, scale),
        "StudentT": lambda: dist.StudentT(torch.tensor(3.0), loc, scale),
        "Laplace": lambda: dist.Laplace(loc, scale),
        "Event": lambda: dist.Normal(loc, scale).to_event(1),
    }[name]()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("centered", [None, 0.0, 0.3, 1.0, "tensor"])
@pytest.mark.parametrize("name", ["Normal", "StudentT", "Laplace", "Event"])
def test_loc_scale_reparam_matches_pyro(seed, centered, name):
    if centered == "tensor":
        centered = torch.tensor([0.0, 0.5, 1.0])

    def build(lib, dist, reparams):
        def model():
            with lib.plate("groups", 2, dim=-2):
                return lib.sample("x", family(dist, name))

        config = {"x": reparams.LocScaleReparam(centered=centered)}
        return lib.poutine.reparam(model, config=config)

    assert_same(*trace_both(build, seed))


@pytest.mark.parametrize("name", ["Affine", "LogNormal", "Event"])
def test_transform_reparam_matches_pyro(name):
    def build(lib, dist, reparams):
        def model():
            base = dist.Normal(torch.zeros(3), torch.ones(3))
            fn = {
                "Affine": lambda: dist.TransformedDistribution(
                    base,
                    [dist.transforms.AffineTransform(1.0, 2.0), dist.transforms.ExpTransform()],
                ),
                "LogNormal": lambda: dist.LogNormal(torch.zeros(3), 0.5),
                "Event": lambda: dist.TransformedDistribution(
                    base.to_event(1), [dist.transforms.StickBreakingTransform()]
                ),
            }[name]()
            with lib.plate("groups", 2):
                return lib.sample("x", fn if name == "Event" else fn.to_event(1))

        config = lambda site: reparams.TransformReparam() if site["name"] == "x" else None  # noqa: E731
        return lib.poutine.reparam(model, config=config)

    assert_same(*trace_both(build, 2))


def test_an_observed_site_is_reparameterized_at_its_value_as_pyro():
    def build(lib, dist, reparams):
        def model():
            scale = lib.sample("scale", dist.LogNormal(0.0, 1.0))
            return lib.sample("y", dist.Normal(1.0, scale), obs=torch.tensor(3.0))

        return lib.poutine.reparam(model, {"y": reparams.LocScaleReparam(0.0)})

    expected, actual = trace_both(build, 4)
    assert_same(expected, actual)
    assert actual.nodes["y_decentered"]["is_observed"]


def elbo_step(lib, dist, reparams):
    def model():
        tau = lib.sample("tau", dist.LogNormal(0.0, 1.0))
        with lib.plate("groups", 3):
            theta = lib.sample("theta", dist.Normal(0.0, tau))
            lib.sample("obs", dist.Normal(theta, 1.0), obs=torch.tensor([1.0, -2.0, 0.5]))

    def guide():
        q = lib.param("q", torch.zeros(3))
        lib.sample("tau", dist.LogNormal(0.0, 1.0))
        with lib.plate("groups", 3):
            lib.sample("theta_decentered", dist.Normal(q, 1.0))

    lib.clear_param_store()
    lib.set_rng_seed(5)
    model = lib.poutine.reparam(model, config={"theta": reparams.LocScaleReparam()})
    elbo = lib.infer.Trace_ELBO(num_particles=3, vectorize_particles=False)
    loss = elbo.differentiable_loss(model, guide)
    store = lib.get_param_store()
    names = sorted(store.keys())
    grads = torch.autograd.grad(loss, [store.get_param(n).unconstrained() for n in names])
    return loss, dict(zip(names, grads, strict=True))


def test_an_elbo_with_a_learned_centering_matches_pyro():
    (ref_loss, ref_grads), (loss, grads) = [elbo_step(*libs) for libs in LIBS]
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=0)  # the sum order differs
    assert sorted(grads) == ["q", "theta_centered"]
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-6, atol=1e-7)


def test_reparam_errors_name_the_site():
    model = lambda: mp.sample("x", mdist.Normal(0.0, 1.0))  # noqa: E731
    with pytest.raises(ValueError, match="TransformReparam at site 'x'.*TransformedDistribution"):
        mp.poutine.reparam(model, {"x": TransformReparam()})()
    with pytest.raises(ValueError, match="LocScaleReparam at site 'x'.*loc and scale"):
        mp.poutine.reparam(
            lambda: mp.sample("x", mdist.Gamma(1.0, 1.0)), {"x": LocScaleReparam(0.0)}
        )()
    with pytest.raises(ValueError, match=r"'centered' should be in \[0, 1\], got 1.5"):
        LocScaleReparam(1.5)
    with pytest.raises(TypeError, match="'config' should be a dict"):
        mp.poutine.reparam(model, config=3)
    with pytest.raises(NotImplementedError, match="Reparam must implement apply"):
        mp.poutine.reparam(model, {"x": Reparam()})()


def test_a_reparameterizer_sees_the_model_arguments_as_in_pyro():
    seen = []

    class Spy(Reparam):
        def apply(self, msg):
            seen.append(self.args_kwargs)
            return msg

    def model(a, b=None):
        mp.sample("x", mdist.Normal(0.0, 1.0))

    mp.poutine.reparam(model, {"x": Spy()})(1, b=2)
    with mp.poutine.reparam(config={"x": Spy()}):
        model(3)
    assert seen == [((1,), {"b": 2}), None]


def neutra_trace(lib, dist, reparams, guide_name):
    from importlib import import_module

    autoguide = import_module(f"{lib.__name__}.infer.autoguide")

    def model():
        a = lib.sample("a", dist.Normal(0.0, 1.0))
        with lib.plate("groups", 2):
            b = lib.sample("b", dist.LogNormal(a, 1.0))
        lib.sample("y", dist.Normal(b.sum(), 1.0), obs=torch.tensor(1.0))

    lib.clear_param_store()
    lib.set_rng_seed(0)
    guide = getattr(autoguide, guide_name)(model)
    svi = lib.infer.SVI(model, guide, lib.optim.Adam({"lr": 0.05}), lib.infer.Trace_ELBO())
    for _ in range(5):
        svi.step()
    neutra = reparams.NeuTraReparam(guide)
    tr = lib.poutine.trace(neutra.reparam(model)).get_trace()
    tr.compute_log_prob()
    return tr, neutra.transform_sample(torch.linspace(-1.0, 1.0, 12).reshape(4, 1, 3))


@pytest.mark.parametrize("guide_name", ["AutoDiagonalNormal", "AutoMultivariateNormal"])
def test_neutra_reparam_matches_pyro(guide_name):
    (expected, ref_samples), (actual, samples) = [neutra_trace(*libs, guide_name) for libs in LIBS]
    assert_same(expected, actual)
    assert list(sites(actual)) == ["a_shared_latent", "a", "b", "y"]
    assert samples.keys() == ref_samples.keys()
    for name, value in samples.items():
        torch.testing.assert_close(value, ref_samples[name], rtol=0, atol=0)


def test_neutra_reparam_errors_as_pyro():
    from miniprob.infer.autoguide import AutoDelta, AutoLaplaceApproximation

    model = lambda: mp.sample("x", mdist.Normal(0.0, 1.0))  # noqa: E731
    with pytest.raises(TypeError, match="NeuTraReparam expected an AutoContinuous guide"):
        mp.infer.reparam.NeuTraReparam(AutoDelta(model))
    guide = AutoLaplaceApproximation(model)
    guide()
    with pytest.raises(ValueError, match="only supports guides that implement `get_transform`"):
        mp.poutine.trace(mp.infer.reparam.NeuTraReparam(guide).reparam(model)).get_trace()
