"""``miniprob.nn`` against Pyro's ``pyro.nn``: the same modules, the same seed, the same numbers.

Each differential case builds a program from a library namespace (``pyro`` or ``miniprob``),
runs SVI, and compares the parameter names in the store, their initial values, the losses and
the parameters after every step.
"""

import copy
import pickle

import pytest
import torch
from torch import nn

import miniprob
import miniprob.distributions
import miniprob.infer
import miniprob.nn
import miniprob.optim
import miniprob.poutine
from miniprob.distributions import constraints
from miniprob.nn import PyroModule, PyroModuleList, PyroParam, PyroSample, pyro_method

pytest.importorskip("pyro")
import pyro  # noqa: E402
import pyro.distributions  # noqa: E402
import pyro.infer  # noqa: E402
import pyro.nn  # noqa: E402
import pyro.optim  # noqa: E402
import pyro.poutine  # noqa: E402

LIBS = {"pyro": pyro, "miniprob": miniprob}
# ``fit`` creates the params with a first call of the guide, to compare their initial values.
pytestmark = pytest.mark.filterwarnings("ignore:SVI. the param store already held")


@pytest.fixture(autouse=True)
def fresh_stores():
    pyro.clear_param_store()
    miniprob.clear_param_store()
    yield
    pyro.clear_param_store()
    miniprob.clear_param_store()


def snapshot(lib):
    return {name: value.detach().clone() for name, value in lib.get_param_store().items()}


def fit(lib, build, steps, *args):
    """Seed, build ``(model, guide)``, run one warm-up call of the guide to create the params,
    then ``steps`` SVI steps: the initial params, the losses and the params after each step."""
    lib.clear_param_store()
    lib.set_rng_seed(0)
    model, guide = build(lib)
    with lib.poutine.trace():
        guide(*args)
    initial = snapshot(lib)
    svi = lib.infer.SVI(model, guide, lib.optim.Adam({"lr": 0.02}), lib.infer.Trace_ELBO())
    losses, trajectory = [], []
    for _ in range(steps):
        losses.append(svi.step(*args))
        trajectory.append(snapshot(lib))
    return initial, losses, trajectory


def assert_same_fit(expected, actual, exact):
    (init_p, losses_p, traj_p), (init_m, losses_m, traj_m) = expected, actual
    assert list(init_m) == list(init_p)
    for name, value in init_p.items():
        assert torch.equal(init_m[name], value), name
    assert losses_m == pytest.approx(losses_p, rel=1e-6, abs=1e-6)
    for step, (params_p, params_m) in enumerate(zip(traj_p, traj_m, strict=True)):
        assert list(params_m) == list(params_p), f"step {step}"
        for name, value in params_p.items():
            if exact:
                assert torch.equal(params_m[name], value), f"step {step}, param '{name}'"
            else:
                assert torch.allclose(params_m[name], value, atol=1e-6, rtol=1e-6), (
                    f"step {step}, param '{name}'"
                )


# ---- (d) a PyroModule[nn.Linear] Bayesian regression with a hand-written guide ---------------
X = torch.linspace(-1.0, 1.0, 12).reshape(6, 2)
Y = X @ torch.tensor([1.5, -0.5]) + 0.3 + 0.1 * torch.sin(torch.arange(6.0))


def bayesian_regression(lib):
    dist, pnn = lib.distributions, lib.nn

    class BayesianRegression(pnn.PyroModule):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.linear = pnn.PyroModule[nn.Linear](in_features, out_features)
            self.linear.weight = pnn.PyroSample(
                dist.Normal(0.0, 1.0).expand([out_features, in_features]).to_event(2)
            )
            self.linear.bias = pnn.PyroSample(
                dist.Normal(0.0, 10.0).expand([out_features]).to_event(1)
            )
            self.sigma = pnn.PyroSample(dist.LogNormal(0.0, 1.0))

        def forward(self, x, y=None):
            sigma = self.sigma
            mean = self.linear(x).squeeze(-1)
            with lib.plate("data", x.shape[0]):
                lib.sample("obs", dist.Normal(mean, sigma), obs=y)
            return mean

    model = BayesianRegression(2, 1)

    def guide(x, y=None):
        w_loc = lib.param("w_loc", torch.randn(1, 2))
        w_scale = lib.param("w_scale", torch.full((1, 2), 0.5), constraint=constraints.positive)
        b_loc = lib.param("b_loc", torch.zeros(1))
        b_scale = lib.param("b_scale", torch.ones(1), constraint=constraints.positive)
        s_loc = lib.param("s_loc", torch.tensor(-1.0))
        lib.sample("linear.weight", dist.Normal(w_loc, w_scale).to_event(2))
        lib.sample("linear.bias", dist.Normal(b_loc, b_scale).to_event(1))
        lib.sample("sigma", dist.LogNormal(s_loc, 0.3))

    return model, guide


def test_bayesian_regression_follows_pyro_bitwise():
    expected = fit(pyro, bayesian_regression, 50, X, Y)
    actual = fit(miniprob, bayesian_regression, 50, X, Y)
    assert_same_fit(expected, actual, exact=True)


def test_bayesian_regression_sites_are_named_by_path():
    model, _ = bayesian_regression(miniprob)
    trace = miniprob.poutine.trace(model).get_trace(X, Y)
    assert [n for n, s in trace.nodes.items() if s["type"] == "sample" and n != "data"] == [
        "sigma",
        "linear.weight",
        "linear.bias",
        "obs",
    ]
    assert model.linear.weight.shape == (1, 2)  # outside a call: a draw, no statement
    assert "weight" not in dict(model.named_parameters())


# ---- a module of PyroParams (positive, simplex) and nested PyroModules ----------------------
def nested_guide(lib):
    dist, pnn = lib.distributions, lib.nn

    class Inner(pnn.PyroModule):
        def __init__(self):
            super().__init__()
            self.weights = pnn.PyroParam(
                torch.tensor([0.2, 0.3, 0.5]), constraint=constraints.simplex, event_dim=1
            )
            self.scale = pnn.PyroParam(torch.tensor(0.5), constraint=constraints.positive)

    class Guide(pnn.PyroModule):
        def __init__(self):
            super().__init__("guide")
            self.inner = Inner()
            self.conc = pnn.PyroParam(torch.full((3,), 2.0), constraint=constraints.positive)
            self.loc = nn.Parameter(torch.tensor(0.1))

        def forward(self, data):
            lib.sample("z", dist.Dirichlet(3.0 * self.conc * self.inner.weights))
            lib.sample("s", dist.LogNormal(self.loc, self.inner.scale))

    def model(data):
        z = lib.sample("z", dist.Dirichlet(torch.ones(3)))
        s = lib.sample("s", dist.LogNormal(0.0, 1.0))
        with lib.plate("data", len(data)):
            lib.sample("obs", dist.Normal(z @ torch.tensor([1.0, 2.0, 3.0]), s), obs=data)

    return model, Guide()


def test_nested_constrained_params_follow_pyro():
    data = torch.tensor([2.1, 2.4, 1.9, 2.2])
    expected = fit(pyro, nested_guide, 30, data)
    actual = fit(miniprob, nested_guide, 30, data)
    assert set(actual[0]) == {"guide.inner.weights", "guide.conc", "guide.inner.scale", "guide.loc"}
    assert_same_fit(expected, actual, exact=True)


def test_store_and_module_share_leaves():
    _, guide = nested_guide(miniprob)
    guide(torch.zeros(1))
    store = miniprob.get_param_store()
    assert store.unconstrained("guide.conc") is guide.conc_unconstrained
    assert store.unconstrained("guide.inner.weights") is guide.inner.weights_unconstrained
    assert store.unconstrained("guide.loc") is guide._parameters["loc"]
    assert torch.allclose(miniprob.param("guide.inner.weights"), torch.tensor([0.2, 0.3, 0.5]))
    assert store.get_constraint("guide.conc") is constraints.positive
    assert set(dict(guide.named_parameters())) == {
        "conc_unconstrained",
        "loc",
        "inner.weights_unconstrained",
        "inner.scale_unconstrained",
    }
    assert dict(guide.named_pyro_params()).keys() == {"conc", "loc", "inner.weights", "inner.scale"}


# ---- PyroSample lambdas -------------------------------------------------------------------
def lambda_model(lib):
    dist, pnn = lib.distributions, lib.nn

    class Model(pnn.PyroModule):
        def __init__(self):
            super().__init__()
            self.mu = pnn.PyroParam(torch.tensor(0.5))
            self.scale = pnn.PyroParam(torch.tensor(2.0), constraint=constraints.positive)
            self.loc = pnn.PyroSample(lambda self: dist.Normal(self.mu, 1.0))
            self.z = pnn.PyroSample(lambda self: dist.Normal(self.loc, self.scale))
            self.zz = pnn.PyroSample(lambda self: self.z**2)

        def forward(self):
            return self.zz + self.z + self.loc

    return Model()


def test_pyro_sample_lambdas_match_pyro():
    traces = {}
    for name, lib in LIBS.items():
        lib.set_rng_seed(3)
        model = lambda_model(lib)
        traces[name] = lib.poutine.trace(model).get_trace()
    tp, tm = traces["pyro"], traces["miniprob"]
    assert list(tm.nodes) == list(tp.nodes)
    for name, site in tm.nodes.items():
        if name in ("_INPUT", "_RETURN"):
            continue
        assert site["type"] == tp.nodes[name]["type"], name
        assert torch.equal(site["value"], tp.nodes[name]["value"]), name
    assert torch.equal(tm.log_prob_sum(), tp.log_prob_sum())


def test_samples_are_cached_per_call_and_fresh_between_calls():
    class M(PyroModule):
        x = PyroSample(miniprob.distributions.Normal(0.0, 1.0))

        def forward(self):
            return torch.stack([self.x, self.x])

        @pyro_method
        def pair(self):
            return self.forward()

    m = M()
    with miniprob.poutine.trace() as tr:
        first = m()
    assert list(tr.trace.nodes) == ["x"] and first[0] == first[1]
    assert m()[0] != first[0]
    a = m.pair()
    assert a[0] == a[1]


# ---- training state, serialization, the store after a clear --------------------------------
class Regression(PyroModule):
    def __init__(self):
        super().__init__()
        self.linear = PyroModule[nn.Linear](3, 1)
        self.scale = PyroParam(torch.tensor(0.7), constraint=constraints.positive)

    def forward(self, x):
        return self.linear(x) * self.scale


def test_clear_param_store_puts_the_module_values_back():
    m = Regression()
    m(torch.ones(2, 3))
    store = miniprob.get_param_store()
    assert sorted(store.keys()) == ["linear.bias", "linear.weight", "scale"]
    with torch.no_grad():
        m.scale_unconstrained.add_(1.0)
    trained = m.scale.detach().clone()
    miniprob.clear_param_store()
    m(torch.ones(2, 3))
    assert sorted(store.keys()) == ["linear.bias", "linear.weight", "scale"]
    assert torch.equal(miniprob.param("scale").detach(), trained)
    assert store.unconstrained("linear.weight") is m.linear._parameters["weight"]


def test_store_value_wins_over_the_module_when_it_is_there():
    miniprob.param("scale", torch.tensor(3.0), constraint=constraints.positive)
    m = Regression()
    out = m(torch.ones(1, 3))
    assert torch.allclose(m.scale, torch.tensor(3.0))
    assert miniprob.get_param_store().unconstrained("scale") is m.scale_unconstrained
    assert isinstance(m.scale_unconstrained, nn.Parameter) and out.shape == (1, 1)


def test_state_dict_parameters_train_eval_like_pyro():
    for lib in LIBS.values():
        lib.set_rng_seed(0)
    mp = Regression()
    py = pyro.nn.PyroModule()
    py.linear = pyro.nn.PyroModule[nn.Linear](3, 1)
    torch.manual_seed(0)
    py.linear = pyro.nn.PyroModule[nn.Linear](3, 1)
    py.scale = pyro.nn.PyroParam(torch.tensor(0.7), constraint=constraints.positive)
    assert list(mp.state_dict()) == list(py.state_dict())
    assert [n for n, _ in mp.named_parameters()] == [n for n, _ in py.named_parameters()]
    mp.eval()
    assert not mp.training and not mp.linear.training
    mp.train()
    assert mp.linear.training


def test_deepcopy_and_pickle_keep_values_and_training_goes_on():
    m = Regression()
    x = torch.ones(2, 3)
    svi = miniprob.infer.SVI(
        lambda x: miniprob.factor("f", -m(x).pow(2).sum()),
        lambda x: None,
        miniprob.optim.Adam({"lr": 0.1}),
        miniprob.infer.Trace_ELBO(),
    )
    svi.step(x)
    clone = copy.deepcopy(m)
    loaded = pickle.loads(pickle.dumps(m))
    for other in (clone, loaded):
        assert type(other.linear) is type(m.linear)
        assert torch.equal(other.scale, m.scale)
        assert torch.equal(other.linear.weight, m.linear.weight)
    before = m.scale.item()
    svi.step(x)  # the live module still trains after being pickled
    assert m.scale.item() != before


def test_to_pyro_module_and_module_list():
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    miniprob.nn.to_pyro_module_(net)
    assert isinstance(net, PyroModule[nn.Sequential]) and isinstance(net[2], PyroModule)
    net(torch.ones(1, 2))
    assert sorted(miniprob.get_param_store().keys()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    layers = PyroModuleList([PyroModule[nn.Linear](2, 2) for _ in range(2)])
    assert PyroModule[nn.ModuleList] is PyroModuleList
    root = PyroModule("root")
    root.layers = layers
    assert type(root.layers[0:1]) is nn.ModuleList
    assert root.layers[1]._pyro_name == "root.layers.1"


def test_pyro_module_class_syntax_is_cached_and_mixes_in():
    cls = PyroModule[nn.Linear]
    assert cls is PyroModule[nn.Linear] and cls.__name__ == "PyroLinear"
    assert issubclass(cls, nn.Linear) and issubclass(cls, PyroModule)
    assert PyroModule[nn.Module] is PyroModule and PyroModule[cls] is cls
    with pytest.raises(TypeError, match="nn.Module subclass"):
        PyroModule[int]


# ---- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize("prior", [3.0, "Normal", torch.tensor(1.0)])
def test_pyro_sample_prior_that_is_not_a_distribution(prior):
    m = PyroModule[nn.Linear](2, 1)
    with pytest.raises(TypeError, match=r"PyroSample 'PyroLinear.weight'.*distribution"):
        m.weight = PyroSample(prior)
    assert isinstance(m._parameters["weight"], nn.Parameter)  # nothing changed


def test_pyro_sample_prior_function_with_the_wrong_arity():
    m = PyroModule()
    with pytest.raises(TypeError, match=r"PyroSample 'PyroModule.x'.*single argument 'self'"):
        m.x = PyroSample(lambda: miniprob.distributions.Normal(0.0, 1.0))


def test_pyro_sample_lambda_returning_a_non_distribution_names_the_site():
    class M(PyroModule):
        x = PyroSample(lambda self: "oops")

        def forward(self):
            return self.x

    with pytest.raises(TypeError, match=r"sample site 'x'.*Distribution.*str"):
        M()()


@pytest.mark.parametrize(
    "init, constraint",
    [
        (torch.tensor([0.2, 0.2]), constraints.simplex),
        (torch.tensor(1.5), constraints.unit_interval),
    ],
)
def test_pyro_param_init_outside_support_accepted_where_pyro_accepts_it(init, constraint):
    values = {}
    for name, lib in LIBS.items():
        m = lib.nn.PyroModule()
        m.p = lib.nn.PyroParam(init, constraint=constraint)
        values[name] = m.p.detach()
    assert torch.equal(values["miniprob"], values["pyro"])


@pytest.mark.parametrize(
    "init, constraint, found",
    [
        (torch.tensor([1.0, -1.0]), constraints.positive, "outside the support"),
        (torch.tensor([0.0]), constraints.positive, "outside the support"),
        (torch.tensor([float("nan")]), constraints.real, "not finite"),
    ],
)
def test_pyro_param_init_with_a_nonfinite_inverse_is_refused(init, constraint, found):
    m = Regression()
    before = m.scale.detach().clone()
    with pytest.raises(ValueError, match=rf"PyroParam 'scale'.*{found}"):
        m.scale = PyroParam(init, constraint=constraint)
    assert torch.equal(m.scale.detach(), before)  # nothing changed
