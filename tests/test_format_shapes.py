"""``Trace.format_shapes()`` prints Pyro's "Trace Shapes:" table, character for character, for
the same model (nested plates, event dims, subsampling, sequential plates, params, log_prob
computed or not, ``last_site``, a title)."""

import pytest
import torch

import miniprob as mp
from miniprob.poutine import Trace

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def nested_plates(lib):
    d = lib.distributions
    lib.param("p", torch.ones(3, 2))
    a = lib.sample("a", d.Normal(0.0, 1.0))
    with lib.plate("outer", 5, dim=-2):
        with lib.plate("inner", 10, subsample_size=4):
            b = lib.sample("b", d.Normal(torch.zeros(2), 1.0).to_event(1))
            lib.sample("obs", d.Normal(b.sum(-1) + a, 1.0), obs=torch.zeros(5, 4))


def event_dims(lib):
    d = lib.distributions
    lib.param("scale_tril", torch.eye(3), constraint=d.constraints.lower_cholesky)
    with lib.plate("data", 7):
        lib.sample("mvn", d.MultivariateNormal(torch.zeros(3), torch.eye(3)))
        lib.sample("dir", d.Dirichlet(torch.ones(2, 4)).to_event(1))
        lib.sample("c", d.Categorical(torch.ones(6) / 6))


def subsampled_and_sequential(lib):
    d = lib.distributions
    data = torch.arange(100.0)
    with lib.plate("batch", 100, subsample_size=8) as idx:
        lib.sample("y", d.Normal(0.0, 1.0), obs=data[idx])
    for i in lib.plate("seq", 3):
        lib.sample(f"s_{i}", d.Bernoulli(0.5))
    lib.param("long_parameter_name", torch.zeros(1, 2, 3, 4, 5))
    lib.sample("x", d.Normal(torch.zeros(2, 3), 1.0).expand_by([4]).to_event(2))


def no_sites(lib):
    return None


MODELS = [nested_plates, event_dims, subsampled_and_sequential]


def both_traces(pyro_ref, model):
    traces = []
    for lib in (pyro_ref, mp):
        lib.clear_param_store()
        lib.set_rng_seed(0)
        traces.append(lib.poutine.trace(model).get_trace(lib))
    return traces


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_the_table_is_pyros(pyro_ref, model):
    expected, actual = both_traces(pyro_ref, model)
    assert actual.format_shapes() == expected.format_shapes()
    for tr in (expected, actual):
        tr.compute_log_prob()
    assert actual.format_shapes() == expected.format_shapes()
    assert actual.format_shapes().splitlines()[0].strip() == "Trace Shapes:"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_last_site_and_title_are_pyros(pyro_ref, model):
    expected, actual = both_traces(pyro_ref, model)
    for last_site in list(actual.nodes)[1:-1]:
        assert actual.format_shapes(last_site=last_site) == expected.format_shapes(
            last_site=last_site
        ), last_site
    assert actual.format_shapes("Shapes of the model") == expected.format_shapes(
        "Shapes of the model"
    )


def test_an_empty_trace_is_its_title(pyro_ref):
    assert Trace().format_shapes() == pyro_ref.poutine.Trace().format_shapes() == "Trace Shapes:"
    expected, actual = both_traces(pyro_ref, no_sites)
    assert actual.format_shapes() == expected.format_shapes()


def test_the_table_reads_right():
    """The columns: batch dims right-aligned before '|', event dims left-aligned after it."""
    mp.set_rng_seed(0)
    lines = mp.poutine.trace(nested_plates).get_trace(mp).format_shapes().splitlines()
    assert lines[:4] == ["Trace Shapes:        ", " Param Sites:        ", "            p   3 2  ",
                         "Sample Sites:        "]  # fmt: skip
    assert "       b dist 5 4 | 2" in lines
    assert "        value 5 4 | 2" in lines


def test_an_error_in_a_traced_model_shows_the_table_so_far_as_pyros_does(pyro_ref):
    def model(lib):
        lib.sample("a", lib.distributions.Normal(torch.zeros(2), 1.0))
        with lib.plate("data", 3):
            lib.sample("x", lib.distributions.Normal(torch.zeros(4), 1.0))

    with pytest.raises(ValueError) as theirs:
        pyro_ref.poutine.trace(model).get_trace(pyro_ref)
    with pytest.raises(ValueError) as ours:
        mp.poutine.trace(model).get_trace(mp)
    table = ours.value.__notes__[-1]
    assert table.splitlines()[0].strip() == "Trace Shapes:"
    assert str(theirs.value).endswith(table)  # Pyro appends the same table to its message
