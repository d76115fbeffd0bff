"""``SVI`` accepts Pyro's deprecated ``num_samples``/``num_steps`` keywords, as Pyro does."""

import pyro
import pyro.distributions
import pyro.infer
import pyro.optim
import pytest
import torch

import miniprob
import miniprob.distributions
import miniprob.infer
import miniprob.optim


def _fit(lib):
    lib.clear_param_store()
    lib.set_rng_seed(0)

    def model():
        lib.sample("x", lib.distributions.Normal(0.0, 1.0), obs=torch.tensor(0.5))

    def guide():
        lib.param("p", torch.tensor(1.0))

    with pytest.warns(FutureWarning, match="num_samples"):
        svi = lib.infer.SVI(
            model,
            guide,
            lib.optim.Adam({"lr": 0.1}),
            loss=lib.infer.Trace_ELBO(),
            num_samples=100,
        )
    return svi.step()


def test_svi_num_samples_keyword_matches_pyro():
    assert _fit(miniprob) == pytest.approx(_fit(pyro))


def test_svi_num_steps_keyword_warns():
    with pytest.warns(FutureWarning, match="num_steps"):
        miniprob.infer.SVI(
            lambda: None,
            lambda: None,
            miniprob.optim.Adam({"lr": 0.1}),
            loss=miniprob.infer.Trace_ELBO(),
            num_steps=5,
        )
