"""``sample(..., obs_mask=...)``: a partly observed site, differentially against Pyro (the
sites ``x_observed``, ``x_unobserved`` and the deterministic ``x``, their masks, values, log
densities, an ELBO over the unobserved part, and the shape error)."""

import pytest
import torch

import miniprob as mp
import miniprob.distributions as mdist

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

pyro = pytest.importorskip("pyro")
import pyro.distributions as pdist  # noqa: E402

LIBS = [(pyro, pdist), (mp, mdist)]
DATA = torch.tensor([[0.5, -1.0], [2.0, 0.0], [1.5, 3.0]])
MASK = torch.tensor([True, False, True])


def model(lib, dist, event):
    loc = lib.sample("loc", dist.Normal(0.0, 2.0))
    with lib.plate("data", 3):
        if event:
            fn = dist.Normal(loc, 1.0).expand([3, 2]).to_event(1)
            return lib.sample("x", fn, obs=DATA, obs_mask=MASK)
        return lib.sample("x", dist.Normal(loc, 1.0), obs=DATA[:, 0], obs_mask=MASK)


@pytest.mark.parametrize("event", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_obs_mask_sites_match_pyro(event, seed):
    traces = []
    for lib, dist in LIBS:
        lib.set_rng_seed(seed)
        tr = lib.poutine.trace(model).get_trace(lib, dist, event)
        tr.compute_log_prob()
        traces.append(tr)
    expected, actual = traces
    names = [n for n, s in actual.nodes.items() if s["type"] == "sample" and n != "data"]
    assert names == ["loc", "x_observed", "x_unobserved", "x"]
    for name in names:
        got, ref = actual.nodes[name], expected.nodes[name]
        assert got["is_observed"] == ref["is_observed"], name
        assert got["infer"] == ref["infer"], name
        torch.testing.assert_close(got["value"], ref["value"], rtol=0, atol=0)
        torch.testing.assert_close(got["log_prob"], ref["log_prob"], rtol=0, atol=0)
        if ref["mask"] is None:
            assert got["mask"] is None, name
        else:
            assert torch.equal(got["mask"], ref["mask"]), name
    torch.testing.assert_close(actual.log_prob_sum(), expected.log_prob_sum(), rtol=0, atol=0)


def elbo_loss(lib, dist):
    def guide():
        q = lib.param("q", torch.zeros(3))
        lib.sample("loc", dist.Normal(0.0, 1.0))
        with lib.plate("data", 3):
            lib.sample("x_unobserved", dist.Normal(q, 1.0))

    lib.clear_param_store()
    lib.set_rng_seed(3)
    elbo = lib.infer.Trace_ELBO(num_particles=4, vectorize_particles=False)
    return elbo.loss(lambda: model(lib, dist, False), guide)


def test_an_elbo_over_the_unobserved_part_matches_pyro():
    assert elbo_loss(mp, mdist) == elbo_loss(pyro, pdist)


def test_an_obs_mask_of_the_wrong_shape_raises_as_pyro():
    for lib, dist in LIBS:
        with pytest.raises(ValueError, match=r"Invalid obs_mask shape \(2,\); should be broad"):
            with lib.poutine.trace():
                lib.sample(
                    "x",
                    dist.Normal(torch.zeros(3), 1.0),
                    obs=torch.zeros(3),
                    obs_mask=torch.tensor([True, False]),
                )


def test_obs_mask_outside_any_handler_returns_the_interleaved_value():
    torch.manual_seed(0)
    value = mp.sample("x", mdist.Normal(torch.zeros(3), 1.0), obs=torch.ones(3), obs_mask=MASK)
    assert value[MASK].tolist() == [1.0, 1.0] and value[1] != 1.0
