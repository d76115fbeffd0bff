"""``render_model`` and ``infer.inspect.get_dependencies``, differentially against Pyro: the
same dependency dicts, and the same graphviz graph (nodes, edges, clusters, attributes: the
same DOT source) on the models of Pyro's model-rendering tutorial; files written when graphviz's
``dot`` is present."""

import shutil
from importlib import import_module

import pytest
import torch
import torch.nn.functional as F
from tutorial_runner import run_tutorial

import miniprob as mp
import miniprob.distributions as mdist
from miniprob.infer.inspect import get_dependencies

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

pyro = pytest.importorskip("pyro")
graphviz = pytest.importorskip("graphviz")
import pyro.distributions as pdist  # noqa: E402
from pyro.infer.inspect import get_dependencies as pyro_get_dependencies  # noqa: E402

LIBS = [(pyro, pdist), (mp, mdist)]
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is absent")


def simple(lib, dist):
    def model(data):
        m = lib.sample("m", dist.Normal(0.0, 1.0))
        sd = lib.sample("sd", dist.LogNormal(m, 1.0))
        with lib.plate("N", len(data)):
            lib.sample("obs", dist.Normal(m, sd), obs=data)

    return model, {"model_args": (torch.ones(10),)}


def mace(lib, dist):
    positions = torch.tensor([0, 0, 0, 1, 2, 3, 4])
    annotations = torch.randint(0, 4, (45, 7), generator=torch.Generator().manual_seed(0))

    def model(positions, annotations):
        num_classes = int(annotations.max()) + 1
        num_items, num_positions = annotations.shape
        with lib.plate("annotator", int(positions.max()) + 1):
            epsilon = lib.sample("ε", dist.Dirichlet(torch.full((num_classes,), 10.0)))
            theta = lib.sample("θ", dist.Beta(0.5, 0.5))
        with lib.plate("item", num_items, dim=-2):
            c = lib.sample("c", dist.Categorical(logits=torch.zeros(num_classes)))
            with lib.plate("position", num_positions):
                s = lib.sample("s", dist.Bernoulli(1 - theta[positions]))
                one_hot = F.one_hot(c, num_classes).float()
                probs = torch.where(s[..., None] == 0, one_hot, epsilon[positions])
                lib.sample("y", dist.Categorical(probs), obs=annotations)

    return model, {"model_args": (positions, annotations)}


def with_params(lib, dist):
    def model(data):
        sigma = lib.param("sigma", torch.tensor([1.0]), constraint=dist.constraints.positive)
        mu = lib.param("mu", torch.tensor([0.0]))
        x = lib.sample("x", dist.Normal(mu, sigma))
        y = lib.sample("y", dist.LogNormal(x, 1.0))
        with lib.plate("N", len(data)):
            lib.sample("z", dist.Normal(x, y), obs=data)

    options = {"render_params": True, "render_distributions": True}
    return model, {"model_args": (torch.ones(10),), **options}


def overlapping_plates(lib, dist):
    def model():
        plate1 = lib.plate("plate1", 2, dim=-2)
        plate2 = lib.plate("plate2", 3, dim=-1)
        with plate1:
            x = lib.sample("x", dist.Normal(0.0, 1.0))
        with plate1, plate2:
            y = lib.sample("y", dist.Normal(x, 1.0))
        with plate2:
            lib.sample("z", dist.Normal(y.sum(-2, True), 1.0), obs=torch.zeros(3))

    return model, {}


def semisupervised(lib, dist):
    def model(x, y=None):
        with lib.plate("N", 2):
            z = lib.sample("z", dist.Normal(0.0, 1.0))
            y = lib.sample("y", dist.Normal(0.0, 1.0), obs=y)
            lib.sample("x", dist.Normal(y + z, 1.0), obs=x)

    kwargs = [{"x": torch.zeros(2)}, {"x": torch.zeros(2), "y": torch.zeros(2)}]
    return model, {"model_kwargs": kwargs}


def deterministic(lib, dist):
    def model(data):
        sigma = lib.param("sigma", torch.tensor([1.0]), constraint=dist.constraints.positive)
        mu = lib.param("mu", torch.tensor([0.0]))
        x = lib.sample("x", dist.Normal(mu, sigma))
        log_y = lib.sample("y", dist.Normal(x, 1.0))
        y = lib.deterministic("y_deterministic", log_y.exp())
        with lib.plate("N", len(data)):
            eps_z_loc = lib.sample("eps_z_loc", dist.Normal(0.0, 1.0))
            z_loc = lib.deterministic("z_loc", eps_z_loc + x, event_dim=0)
            lib.sample("z", dist.Normal(z_loc, y), obs=data)

    options = {"render_params": True, "render_distributions": True, "render_deterministic": True}
    return model, {"model_args": (torch.ones(10),), **options}


def pyro_module_regression(lib, dist):
    # The model of Pyro's Bayesian regression tutorial: PyroModule[nn.Linear] with PyroSample
    # weights.
    nn_lib = import_module(f"{lib.__name__}.nn")

    class BayesianRegression(nn_lib.PyroModule):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.linear = nn_lib.PyroModule[torch.nn.Linear](in_features, out_features)
            weight = dist.Normal(0.0, 1.0).expand([out_features, in_features]).to_event(2)
            self.linear.weight = nn_lib.PyroSample(weight)
            bias = dist.Normal(0.0, 10.0).expand([out_features]).to_event(1)
            self.linear.bias = nn_lib.PyroSample(bias)

        def forward(self, x, y=None):
            sigma = lib.sample("sigma", dist.Uniform(0.0, 10.0))
            mean = self.linear(x).squeeze(-1)
            with lib.plate("data", x.shape[0]):
                lib.sample("obs", dist.Normal(mean, sigma), obs=y)
            return mean

    args = (torch.randn(10, 3), torch.randn(10))
    options = {"render_params": True, "render_distributions": True}
    return BayesianRegression(3, 1), {"model_args": args, **options}


MODELS = [
    simple,
    mace,
    with_params,
    overlapping_plates,
    semisupervised,
    deterministic,
    pyro_module_regression,
]


@pytest.mark.parametrize("build", MODELS, ids=lambda b: b.__name__)
def test_render_model_draws_pyros_graph(build):
    graphs = []
    for lib, dist in LIBS:
        model, options = build(lib, dist)
        graphs.append(lib.render_model(model, **options))
    expected, actual = graphs
    assert isinstance(actual, graphviz.Digraph)
    assert actual.source == expected.source


def test_plates_are_clusters_and_observed_sites_gray():
    model, options = mace(mp, mdist)
    source = mp.render_model(model, **options).source
    for plate in ("annotator", "item", "position"):
        assert f"subgraph cluster_{plate} {{" in source
    assert "y [label=y fillcolor=gray" in source and "c -> y" in source


DEPENDENCY_MODELS = [simple, mace, with_params, overlapping_plates, deterministic]


@pytest.mark.parametrize("build", DEPENDENCY_MODELS, ids=lambda b: b.__name__)
@pytest.mark.parametrize("include_deterministic", [False, True])
def test_get_dependencies_matches_pyro(build, include_deterministic):
    results = []
    for (lib, dist), get in zip(LIBS, (pyro_get_dependencies, get_dependencies), strict=True):
        model, options = build(lib, dist)
        args = options.get("model_args")
        results.append(get(model, args, include_deterministic=include_deterministic))
    assert results[1] == results[0]


def test_get_dependencies_of_pyros_docstring_models():
    def collider(lib, dist):
        a = lib.sample("a", dist.Normal(0.0, 1.0))
        b = lib.sample("b", dist.LogNormal(0.0, 1.0))
        c = lib.sample("c", dist.Normal(a, b))
        lib.sample("d", dist.Normal(c, 1.0), obs=torch.tensor(0.0))

    def dense_plate(lib, dist):
        with lib.plate("p", 5):
            a = lib.sample("a", dist.Normal(0.0, 1.0))
        lib.sample("b", dist.Normal(a.sum(), 1.0), obs=torch.tensor(0.0))

    for model in (collider, dense_plate):
        expected = pyro_get_dependencies(model, (pyro, pdist))
        assert get_dependencies(model, (mp, mdist)) == expected
    assert get_dependencies(dense_plate, (mp, mdist))["posterior_dependencies"]["a"]["a"] == {"p"}


def test_get_dependencies_leaves_the_rng_and_validation_as_they_were():
    model, options = simple(mp, mdist)
    mp.set_rng_seed(0)
    get_dependencies(model, options["model_args"])
    after = torch.rand(())
    mp.set_rng_seed(0)
    assert torch.rand(()) == after
    assert mp.validation_enabled()


@needs_dot
@pytest.mark.parametrize("suffix", ["png", "svg"])
def test_render_model_writes_a_file(tmp_path, suffix):
    model, options = simple(mp, mdist)
    path = tmp_path / f"model.{suffix}"
    mp.render_model(model, filename=path, **options)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") if suffix == "png" else b"<svg" in data
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_missing_dot_is_a_clear_error_when_writing_only(tmp_path, monkeypatch):
    model, options = simple(mp, mdist)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    graph = mp.render_model(model, **options)  # drawing needs no dot
    assert "m -> obs" in graph.source
    with pytest.raises(RuntimeError, match=r"writing '.*model.png' needs graphviz's 'dot'"):
        mp.render_model(model, filename=tmp_path / "model.png", **options)
    with pytest.raises(ValueError, match="has no suffix"):
        mp.render_model(model, filename=tmp_path / "model", **options)


@needs_dot
def test_the_tutorial_runs_and_saves_its_picture(tmp_path):
    run_tutorial("model_rendering.py", tmp_path)
    assert (tmp_path / "bayesian_regression.png").read_bytes().startswith(b"\x89PNG")
