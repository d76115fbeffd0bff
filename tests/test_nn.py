"""``miniprob.nn`` against Pyro's ``pyro.nn``: the same modules, the same seed, the same numbers.

Each differential case builds a program from a library namespace (``pyro`` or ``miniprob``),
runs SVI, and compares the parameter names in the store, their initial values, the losses and
the parameters after every step.
"""

import copy
import pickle
import re
from pathlib import Path

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


def test_a_frozen_sub_module_stays_frozen_as_in_pyro():
    def frozen(lib):
        model, guide = nested_guide(lib)
        guide.inner.requires_grad_(False)
        return model, guide

    data = torch.tensor([2.1, 2.4, 1.9, 2.2])
    expected = fit(pyro, frozen, 5, data)
    actual = fit(miniprob, frozen, 5, data)
    assert_same_fit(expected, actual, exact=True)
    assert torch.equal(actual[2][-1]["guide.inner.scale"], actual[0]["guide.inner.scale"])


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
    miniprob.clear_param_store()
    loaded(x)  # the copy registers its own leaves
    store = miniprob.get_param_store()
    assert store.unconstrained("linear.weight") is loaded.linear._parameters["weight"]
    assert miniprob.param("linear.weight").unconstrained() is loaded.linear._parameters["weight"]


class NamedLinear(PyroModule[nn.Linear]):
    pass


def test_mixins_and_their_named_subclasses_pickle_as_themselves():
    for module in (PyroModule[nn.Linear](2, 1), NamedLinear(2, 1)):
        module.s = PyroParam(torch.tensor(2.0), constraint=constraints.positive)
        loaded = pickle.loads(pickle.dumps(module))
        assert type(loaded) is type(module)
        assert torch.equal(loaded.weight, module.weight) and loaded.s.item() == 2.0


def test_a_module_registered_with_module_pickles():
    net = miniprob.module("net", nn.Linear(2, 1))
    copy_ = pickle.loads(pickle.dumps(net))
    assert torch.equal(copy_.weight, net.weight)
    assert miniprob.param("net$$$weight").unconstrained() is net.weight


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


# ---- PyroParam event_dim in a subsampled plate; decorators ----------------------------------
def local_guide(lib):
    dist, pnn = lib.distributions, lib.nn

    class Guide(pnn.PyroModule):
        def __init__(self):
            super().__init__()
            self.locs = pnn.PyroParam(torch.linspace(-1.0, 1.0, 6), event_dim=0)
            self.scales = pnn.PyroParam(
                torch.full((6,), 0.5), constraint=constraints.positive, event_dim=0
            )

        def forward(self, data):
            with lib.plate("data", 6, subsample_size=3):
                lib.sample("z", dist.Normal(self.locs, self.scales))

    def model(data):
        with lib.plate("data", 6, subsample_size=3) as idx:
            z = lib.sample("z", dist.Normal(0.0, 1.0))
            lib.sample("obs", dist.Normal(z, 1.0), obs=data[idx])

    return model, Guide()


def test_pyro_params_are_subsampled_by_event_dim_as_in_pyro():
    data = torch.tensor([0.5, -0.3, 1.2, 0.0, 2.0, -1.0])
    expected = fit(pyro, local_guide, 20, data)
    actual = fit(miniprob, local_guide, 20, data)
    assert_same_fit(expected, actual, exact=True)


def decorated(lib):
    dist, pnn = lib.distributions, lib.nn

    class Decorated(pnn.PyroModule):
        @pnn.PyroParam(constraint=constraints.positive, event_dim=1)
        def scale(self):
            return torch.full((2,), 0.5)

        @pnn.PyroParam
        def loc(self):
            return torch.randn(2)

        @pnn.PyroSample
        def x(self):
            return dist.Normal(self.loc, self.scale).to_event(1)

        @pnn.PyroSample
        def y(self):
            return self.x.sum()

        def forward(self):
            return self.y

    return Decorated()


def test_decorators_match_pyro_and_pickle():
    traces = {}
    for name, lib in LIBS.items():
        lib.set_rng_seed(1)
        module = decorated(lib)
        traces[name] = lib.poutine.trace(module).get_trace()
    tp, tm = traces["pyro"], traces["miniprob"]
    assert list(tm.nodes) == list(tp.nodes)
    for name in ("loc", "scale", "x", "y"):
        assert torch.equal(tm.nodes[name]["value"], tp.nodes[name]["value"]), name


class Decorated(PyroModule):
    @PyroParam(constraint=constraints.positive)
    def scale(self):
        return torch.full((2,), 0.5)

    @PyroSample
    def x(self):
        return miniprob.distributions.Normal(0.0, self.scale).to_event(1)

    def forward(self):
        return self.x


def test_decorated_modules_pickle():
    module = Decorated()
    module()
    loaded = pickle.loads(pickle.dumps(module))
    assert torch.equal(loaded.scale, module.scale)
    with miniprob.poutine.trace() as tr:
        assert loaded().shape == (2,)
    assert list(tr.trace.nodes) == ["scale", "x"]


def test_readme_example_runs_and_names_sites_by_path():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Bayesian modules")[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {
        "PyroModule": PyroModule,
        "PyroParam": PyroParam,
        "PyroSample": PyroSample,
        "nn": nn,
        "torch": torch,
        "pyro": miniprob,
        "dist": miniprob.distributions,
        "constraints": constraints,
    }
    exec(compile(code, "README.md", "exec"), namespace)
    trace = miniprob.poutine.trace(namespace["BayesianRegression"]()).get_trace(
        torch.randn(5, 3), torch.randn(5)
    )
    assert [n for n in trace.nodes if not n.startswith("_")] == [
        "linear.weight",
        "linear.bias",
        "data",
        "sigma",
        "obs",
    ]
    assert sorted(miniprob.get_param_store().keys()) == ["linear.bias", "sigma"]


class Tree(PyroModule):
    def __init__(self):
        super().__init__()
        self.linear = PyroModule[nn.Linear](2, 1)
        self.linear2 = PyroModule[nn.Linear](2, 1)
        self.plain = nn.Linear(2, 1)
        self.s = PyroParam(torch.tensor(1.0), constraint=constraints.positive)

    def forward(self, x):
        return self.linear(x) + self.linear2(x) + self.plain(x) * self.s


def test_deleting_attributes_removes_them_from_the_store():
    tree = Tree()
    tree(torch.ones(1, 2))
    store = miniprob.get_param_store()
    assert sorted(store.keys()) == [
        "linear.bias",
        "linear.weight",
        "linear2.bias",
        "linear2.weight",
        "plain$$$bias",
        "plain$$$weight",
        "s",
    ]
    del tree.linear, tree.s, tree.plain
    assert sorted(store.keys()) == ["linear2.bias", "linear2.weight"]
    assert "s_unconstrained" not in dict(tree.named_parameters())
    assert not hasattr(tree, "s")


def converted_mlp(lib):
    dist, pnn = lib.distributions, lib.nn
    net = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))
    pnn.module.to_pyro_module_(net)  # (not in pyro.nn itself)
    net[2].weight = pnn.PyroSample(dist.Normal(0.0, 1.0).expand([1, 4]).to_event(2))

    def model(x, y):
        mean = net(x).squeeze(-1)
        with lib.plate("data", len(x)):
            lib.sample("obs", dist.Normal(mean, 0.5), obs=y)

    def guide(x, y):
        loc = lib.param("w_loc", torch.zeros(1, 4))
        scale = lib.param("w_scale", torch.full((1, 4), 0.3), constraint=constraints.positive)
        lib.sample("2.weight", dist.Normal(loc, scale).to_event(2))

    return model, guide


def test_a_converted_third_party_module_trains_as_in_pyro():
    expected = fit(pyro, converted_mlp, 20, X, Y)
    actual = fit(miniprob, converted_mlp, 20, X, Y)
    assert_same_fit(expected, actual, exact=True)
    assert set(actual[2][-1]) == {"w_loc", "w_scale", "0.weight", "0.bias", "2.bias"}


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_jit_elbo_on_a_pyro_module_guide_gives_trace_elbo_numbers():
    data = torch.tensor([2.1, 2.4, 1.9, 2.2])
    runs = {}
    for loss in (miniprob.infer.Trace_ELBO, miniprob.infer.JitTrace_ELBO):
        miniprob.clear_param_store()
        miniprob.set_rng_seed(0)
        model, guide = nested_guide(miniprob)
        svi = miniprob.infer.SVI(model, guide, miniprob.optim.Adam({"lr": 0.02}), loss())
        losses = [svi.step(data) for _ in range(5)]
        runs[loss] = losses, snapshot(miniprob)
    (losses_t, params_t), (losses_j, params_j) = runs.values()
    assert losses_j == losses_t
    assert all(torch.equal(params_j[k], v) for k, v in params_t.items())


def test_rnn_weights_as_pyro_samples():
    gru = PyroModule[nn.GRU](2, 3)
    prior = miniprob.distributions.Normal(0.0, 1.0).expand([9, 2]).to_event(2)
    gru.weight_ih_l0 = PyroSample(prior)
    with miniprob.poutine.trace() as tr:
        out, _ = gru(torch.ones(4, 1, 2))
    assert out.shape == (4, 1, 3)
    assert [n for n, s in tr.trace.nodes.items() if s["type"] == "sample"] == ["weight_ih_l0"]
    params = [n for n, s in tr.trace.nodes.items() if s["type"] == "param"]
    assert params == ["weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]


def test_param_store_save_and_load_reach_pyro_params(tmp_path):
    m = Regression()
    m(torch.ones(1, 3))
    with torch.no_grad():
        m.scale_unconstrained.add_(0.5)
    saved = m.scale.detach().clone()
    miniprob.get_param_store().save(tmp_path / "store.pt")
    miniprob.clear_param_store()
    fresh = Regression()
    miniprob.get_param_store().load(tmp_path / "store.pt")
    fresh(torch.ones(1, 3))  # reading adopts the loaded leaf
    assert torch.equal(fresh.scale.detach(), saved)
    leaf = fresh.scale_unconstrained
    assert isinstance(leaf, nn.Parameter)
    assert miniprob.get_param_store().unconstrained("scale") is leaf


def test_params_go_to_the_current_store_and_pyro_paths_import():
    import miniprob.nn.module as module_path

    assert module_path.PyroModule is PyroModule and module_path.to_pyro_module_
    assert miniprob.nn.PyroModuleList is PyroModuleList
    m = Regression()
    with miniprob.get_param_store().scope() as store:
        m(torch.ones(1, 3))
        assert sorted(store.keys()) == ["linear.bias", "linear.weight", "scale"]
    assert len(miniprob.get_param_store()) == 0


# ---- module_local_params: parameters live in the modules, not in the store ------------------
def local_fit(lib, steps, data, with_svi):
    """The nested guide trained with module-local params, by SVI or by torch.optim on the ELBO
    module; the initial and final module parameters and the losses."""
    with lib.settings.context(module_local_params=True):
        lib.clear_param_store()
        lib.set_rng_seed(0)
        model, guide = nested_guide(lib)
        guide(data)
        initial = {k: v.detach().clone() for k, v in guide.named_parameters()}
        if with_svi:
            svi = lib.infer.SVI(model, guide, lib.optim.Adam({"lr": 0.02}), lib.infer.Trace_ELBO())
            losses = [svi.step(data) for _ in range(steps)]
        else:
            loss_fn = lib.infer.Trace_ELBO()(model, guide)
            optimizer = torch.optim.Adam(loss_fn.parameters(), lr=0.02)
            losses = []
            for _ in range(steps):
                optimizer.zero_grad()
                loss = loss_fn(data)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
        assert len(lib.get_param_store()) == 0
        final = {k: v.detach().clone() for k, v in guide.named_parameters()}
    return initial, losses, final


@pytest.mark.parametrize("with_svi", [True, False], ids=["SVI", "torch.optim"])
def test_module_local_params_train_as_in_pyro(with_svi):
    # Pyro's SVI fails here (its param statement for the plain nn.Parameter ``loc`` has no
    # ``.unconstrained()``): miniprob's SVI is compared with Pyro's torch.optim loop, the same
    # Adam steps.
    data = torch.tensor([2.1, 2.4, 1.9, 2.2])
    init_p, losses_p, final_p = local_fit(pyro, 10, data, with_svi=False)
    init_m, losses_m, final_m = local_fit(miniprob, 10, data, with_svi)
    assert list(init_m) == list(init_p)
    assert all(torch.equal(init_m[k], v) for k, v in init_p.items())
    assert losses_m == pytest.approx(losses_p, rel=1e-6)
    assert all(torch.equal(final_m[k], v) for k, v in final_p.items())
    assert not all(torch.equal(final_m[k], v) for k, v in init_m.items())


def test_module_local_params_refuse_a_stray_param_statement():
    class Stray(PyroModule):
        def forward(self):
            return miniprob.param("stray", torch.zeros(()))

    with miniprob.settings.context(module_local_params=True):
        with pytest.raises(NotImplementedError, match=r"\['stray'\].*module_local_params"):
            Stray()()
    assert "stray" not in miniprob.get_param_store()


def test_settings_are_validated_and_restored():
    with pytest.raises(TypeError, match="module_local_params should be a bool"):
        miniprob.settings.set(module_local_params=1)
    with pytest.raises(KeyError, match="no setting 'nope'"):
        miniprob.settings.get("nope")
    with miniprob.settings.context(module_local_params=True):
        assert miniprob.settings.get()["module_local_params"] is True
    assert miniprob.settings.get("module_local_params") is False
