"""Bad input to enumeration: each error names the site and says what was expected and found;
the handler stack and the parameter store are left as they were."""

import warnings

import pytest
import torch

import miniprob as pyro
import miniprob.distributions as dist
from miniprob.infer import TraceEnum_ELBO, config_enumerate, infer_discrete
from miniprob.runtime import get_stack


def loss(model, guide=lambda: None, max_plate_nesting=1):
    return TraceEnum_ELBO(max_plate_nesting=max_plate_nesting).loss(model, guide)


def raises(match, model, guide=lambda: None, max_plate_nesting=1, error=ValueError):
    pyro.clear_param_store()
    pyro.param("untouched", torch.tensor(1.0))
    with pytest.raises(error, match=match):
        loss(model, guide, max_plate_nesting)
    assert get_stack() == ()
    assert list(pyro.get_param_store().keys()) == ["untouched"]


def test_site_without_finite_support():
    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0), infer={"enumerate": "parallel"})

    raises(r"site 'x' is marked for enumeration, but its distribution Normal has no finite", model)


def test_max_plate_nesting_too_small():
    def model():
        with pyro.plate("a", 2, dim=-1), pyro.plate("b", 3, dim=-2):
            pyro.sample("z", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})

    raises(
        r"site 'z' is inside plate 'b' at dim -2, but enumeration starts at dim -2 "
        r"\(max_plate_nesting=1\); raise max_plate_nesting to at least 2",
        model,
    )


def test_guide_enumerates_another_support():
    def model():
        pyro.sample("z", dist.Categorical(torch.ones(4) / 4))

    def guide():
        pyro.sample("z", dist.Categorical(torch.ones(3) / 3), infer={"enumerate": "parallel"})

    raises(
        r"site 'z' is enumerated in the guide over the support \[0, 1, 2\] \(Categorical\), "
        r"but the model's Categorical has the support \[0, 1, 2, 3\]",
        model,
        guide,
        max_plate_nesting=0,
    )


def test_guide_enumerates_a_continuous_model_site():
    def model():
        pyro.sample("z", dist.Normal(0.0, 1.0))

    def guide():
        pyro.sample("z", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})

    raises(
        r"site 'z' is enumerated in the guide over 2 values, but the model's Normal",
        model,
        guide,
        0,
    )


def test_too_many_enumeration_dims_says_how_many():
    @config_enumerate
    def model():
        for t in range(70):
            pyro.sample(f"x_{t}", dist.Bernoulli(0.5))

    raises(
        r"site 'x_63': enumeration needs dim -65, 65 dims in all \(64 enumeration dims asked "
        r"for, after 1 plate dims\), but tensors have at most 64 dims",
        model,
    )


def test_site_outside_its_markov_history():
    trans = torch.tensor([[0.8, 0.2], [0.3, 0.7]])

    @config_enumerate
    def model():
        xs = [0, 0]
        for t in pyro.markov(range(4)):
            xs.append(pyro.sample(f"x_{t}", dist.Categorical(trans[xs[-2]])))

    raises(r"site 'x_2' depends on an enumerated variable at dim -2 that it cannot see", model)


def test_markov_misuse():
    with pytest.raises(ValueError, match="history must be an int >= 0, got -1"):
        pyro.markov(history=-1)
    with pytest.raises(TypeError, match="markov expects a function, an iterable or nothing"):
        pyro.markov(5)
    with pytest.raises(TypeError, match=r"only pyro.markov\(iterable\) can be iterated"):
        iter(pyro.markov()).__next__()
    with pytest.raises(NotImplementedError, match="vectorized markov"):
        pyro.markov(dim=-1)
    assert get_stack() == ()


def test_sequential_enumeration_in_the_model_is_refused():
    def model():
        pyro.sample("z", dist.Bernoulli(0.5), infer={"enumerate": "sequential"})

    raises(
        "site 'z': sequential enumeration is supported in the guide only",
        model,
        error=NotImplementedError,
    )


def test_sites_with_different_scales():
    @config_enumerate
    def model():
        z = pyro.sample("z", dist.Bernoulli(0.5))
        with pyro.poutine.scale(scale=2.0):
            pyro.sample("x", dist.Normal(z, 1.0), obs=torch.tensor(0.0))

    raises(r"\['x', 'z'\] have the scales \[1.0, 2.0\]", model, max_plate_nesting=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="default must be 'parallel', 'sequential' or None"):
        config_enumerate(lambda: None, default="all")
    with pytest.raises(ValueError, match="temperature must be 0 or 1, got 2"):
        infer_discrete(lambda: None, first_available_dim=-1, temperature=2)
    with pytest.raises(ValueError, match="first_available_dim must be a negative int"):
        infer_discrete(lambda: None, first_available_dim=0)
    with pytest.raises(ValueError, match="first_available_dim must be a negative int"):
        pyro.poutine.enum(first_available_dim=1)


def test_guide_enumeration_inside_a_plate_the_model_enumerates_outside():
    @config_enumerate
    def model():
        g = pyro.sample("g", dist.Bernoulli(0.5))
        with pyro.plate("data", 3):
            pyro.sample("z", dist.Bernoulli(0.2 + 0.5 * g))

    def guide():
        with pyro.plate("data", 3):
            pyro.sample("z", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})

    raises("site 'z' is enumerated in the guide inside plate 'data', but the model", model, guide)


def test_no_enumerated_site_warns_unless_told_not_to():
    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0), obs=torch.tensor(0.5))

    with pytest.warns(UserWarning, match="TraceEnum_ELBO found no sample sites configured"):
        TraceEnum_ELBO(max_plate_nesting=0).loss(model, lambda: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TraceEnum_ELBO(max_plate_nesting=0, strict_enumeration_warning=False).loss(
            model, lambda: None
        )
