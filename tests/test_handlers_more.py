"""Pyro's other handlers (lift, do, uncondition, infer_config, equalize, escape, queue, scope and
name_count at Pyro's ``contrib.autoname`` path, block_plate) and plate helpers (plate_stack,
subsample), differentially: the same model under miniprob and Pyro, one seed, the same sites,
values, log densities and errors.
"""

import queue as std_queue
import warnings

import pytest
import torch

import miniprob as mp
import miniprob.contrib.autoname as mp_autoname
import miniprob.distributions as mdist

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

pyro = pytest.importorskip("pyro")
import pyro.contrib.autoname as pyro_autoname  # noqa: E402
import pyro.distributions as pdist  # noqa: E402
from pyro.poutine.plate_messenger import block_plate as pyro_block_plate  # noqa: E402

BLOCK_PLATE = {pyro: pyro_block_plate, mp: mp.poutine.block_plate}


def libs():
    """(library, distributions, scope, name_count) for Pyro and miniprob."""
    return [
        (pyro, pdist, pyro_autoname.scope, pyro_autoname.name_count),
        (mp, mdist, mp_autoname.scope, mp_autoname.name_count),
    ]


def run_both(build, seed=0, *args):
    """Trace ``build(lib, dist)()`` under both libraries with one seed: (Pyro's, miniprob's)."""
    traces = []
    for lib, dist, *_ in libs():
        lib.clear_param_store()
        lib.set_rng_seed(seed)
        traces.append(lib.poutine.trace(build(lib, dist)).get_trace(*args))
    return traces


def sites(tr):
    plates = {f.name for s in tr.nodes.values() for f in s.get("cond_indep_stack", ())}
    return {
        name: site
        for name, site in tr.nodes.items()
        if site["type"] in ("sample", "param") and name not in plates
    }


def assert_same(expected, actual):
    ref, got = sites(expected), sites(actual)
    assert list(got) == list(ref)
    for name, site in got.items():
        assert site["type"] == ref[name]["type"], name
        torch.testing.assert_close(site["value"], ref[name]["value"], rtol=0, atol=0)
        if site["type"] == "sample":
            assert site["is_observed"] == ref[name]["is_observed"], name
    expected.compute_log_prob()
    actual.compute_log_prob()
    for name, site in got.items():
        if site["type"] == "sample":
            torch.testing.assert_close(site["log_prob"], ref[name]["log_prob"], rtol=0, atol=0)


# lift


def param_model(lib, dist):
    def model():
        s = lib.param("s", torch.tensor(0.5), constraint=dist.constraints.positive)
        m = lib.param("m", torch.zeros(3))
        s_again = lib.param("s")
        return lib.sample("z", dist.Normal(m, s * s_again).to_event(1))

    return model


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("prior", ["dict", "dist", "callable"])
def test_lift_matches_pyro(seed, prior):
    def build(lib, dist):
        count = iter(range(10))

        def draw(init, constraint=None, event_dim=None):
            return lib.sample(f"w{next(count)}", dist.Exponential(2.0).expand(init.shape))

        priors = {
            "dict": {"s": dist.Exponential(0.3), "m": dist.Normal(torch.zeros(3), 1.0)},
            "dist": dist.Exponential(torch.ones(3)),
            "callable": draw,
        }
        return lib.poutine.lift(param_model(lib, dist), prior=priors[prior])

    expected, actual = run_both(build, seed)
    assert_same(expected, actual)


def test_lift_warns_on_unused_prior_names_as_pyro():
    for lib, dist, *_ in libs():
        lifted = lib.poutine.lift(param_model(lib, dist), prior={"q": dist.Normal(0.0, 1.0)})
        with pytest.warns(UserWarning, match=r"pyro.module prior did not find params \['q'\]"):
            lifted()


def test_lift_refuses_a_prior_that_is_neither_a_distribution_nor_a_function():
    with pytest.raises(TypeError, match="'prior' should be a distribution"):
        mp.poutine.lift(lambda: None, prior=3.0)


# do


def chain_model(lib, dist):
    def model():
        with lib.plate("p", 2):
            z = lib.sample("z", dist.Normal(0.0, 1.0))
        return lib.sample("y", dist.Normal(z, 1.0))

    return model


@pytest.mark.parametrize("value", [torch.tensor([1.5, -2.0]), 0.25])
def test_do_matches_pyro(value):
    def build(lib, dist):
        return lib.poutine.do(chain_model(lib, dist), data={"z": value})

    expected, actual = run_both(build, 3)
    assert "z__CF" not in actual.nodes
    assert_same(expected, actual)
    torch.testing.assert_close(
        actual.nodes["y"]["fn"].loc, expected.nodes["y"]["fn"].loc, rtol=0, atol=0
    )


def test_do_and_condition_express_a_counterfactual_as_pyro():
    def build(lib, dist):
        observed = lib.condition(chain_model(lib, dist), data={"z": torch.tensor([0.1, 0.2])})
        return lib.poutine.do(observed, data={"z": torch.tensor([3.0, 4.0])})

    expected, actual = run_both(build, 1)
    assert_same(expected, actual)


def test_do_twice_on_one_site_warns_and_the_inner_value_wins():
    # Pyro warns too, then recurses without end (each do re-intervenes on the other's copy).
    inner = mp.poutine.do(chain_model(mp, mdist), data={"z": torch.zeros(2)})
    twice = mp.poutine.trace(mp.poutine.do(inner, data={"z": torch.ones(2)}))
    with pytest.warns(RuntimeWarning, match="intervene on variable z multiple times"):
        tr = twice.get_trace()
    assert list(sites(tr)) == ["z", "y"]
    assert tr.nodes["y"]["fn"].loc.tolist() == [0.0, 0.0]


def test_do_with_a_bad_value_raises_as_pyro():
    for lib, dist, *_ in libs():
        bad = lib.poutine.do(chain_model(lib, dist), data={"z": "text"})
        with pytest.raises(NotImplementedError, match="Interventions of type"):
            bad()


# uncondition, infer_config


def observed_model(lib, dist):
    def model():
        a = lib.sample("a", dist.Normal(0.0, 1.0), obs=torch.tensor(2.0))
        with lib.plate("data", 3):
            lib.sample("b", dist.Bernoulli(0.3), obs=torch.ones(3))
        return lib.sample("c", dist.Normal(a, 1.0))

    return model


def test_uncondition_matches_pyro():
    def build(lib, dist):
        return lib.poutine.uncondition(observed_model(lib, dist))

    expected, actual = run_both(build, 5)
    assert_same(expected, actual)
    for name in ("a", "b"):
        assert actual.nodes[name]["infer"]["was_observed"] is True
        torch.testing.assert_close(
            actual.nodes[name]["infer"]["obs"], expected.nodes[name]["infer"]["obs"]
        )


def test_infer_config_matches_pyro():
    def config(site):
        return {"enumerate": "parallel"} if site["name"] == "b" else {"tag": site["type"]}

    def build(lib, dist):
        def model():
            lib.param("w", torch.ones(()))
            return observed_model(lib, dist)()

        return lib.poutine.infer_config(model, config_fn=config)

    expected, actual = run_both(build, 0)
    for name, site in sites(actual).items():
        assert site["infer"] == expected.nodes[name]["infer"], name


# equalize


def category_model(lib, dist):
    def model():
        out = []
        for c in ("x", "y"):
            shift = lib.param(f"{c}_shift", torch.randn(1))
            std = lib.sample(f"{c}_std", dist.LogNormal(0.0, 1.0))
            out.append(lib.sample(f"{c}_values", dist.Normal(shift, std)))
        return out

    return model


@pytest.mark.parametrize("keep_dist", [False, True])
def test_equalize_matches_pyro(keep_dist):
    def build(lib, dist):
        model = lib.poutine.equalize(category_model(lib, dist), ".+_std", keep_dist=keep_dist)
        return lib.poutine.equalize(model, ".+_shift", "param")

    expected, actual = run_both(build, 2)
    assert_same(expected, actual)
    assert actual.nodes["y_std"]["value"] is actual.nodes["x_std"]["value"]


# escape, queue


def test_escape_stops_at_the_site_as_pyro():
    for lib, dist, *_ in libs():
        model = observed_model(lib, dist)
        tracer = lib.poutine.trace(
            lib.poutine.escape(model, escape_fn=lambda msg: msg["name"] == "c")
        )
        with pytest.raises(lib.poutine.NonlocalExit) as info:
            tracer()
        assert info.value.site["name"] == "c"
        assert "c" not in tracer.trace.nodes


def discrete_model(lib, dist):
    def model():
        a = lib.sample("a", dist.Bernoulli(0.3))
        b = lib.sample("b", dist.Categorical(torch.tensor([0.2, 0.3, 0.5])))
        lib.sample("obs", dist.Normal(a + b, 1.0), obs=torch.tensor(1.0))
        return (int(a), int(b))

    return model


@pytest.mark.parametrize("num_samples", [None, 1])
def test_queue_enumerates_as_pyro(num_samples):
    results = []
    for lib, dist, *_ in libs():
        q = std_queue.Queue()
        q.put(lib.poutine.Trace())
        enumerated = lib.poutine.trace(
            lib.poutine.queue(discrete_model(lib, dist), queue=q, num_samples=num_samples)
        )
        runs = []
        while not q.empty():
            tr = enumerated.get_trace()
            runs.append((tr.nodes["_RETURN"]["value"], list(sites(tr)), tr.log_prob_sum()))
        results.append(runs)
    assert [r[:2] for r in results[1]] == [r[:2] for r in results[0]]
    for (*_, got), (*_, ref) in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_queue_errors_as_pyro():
    for lib, dist, *_ in libs():
        q = std_queue.Queue()
        q.put(lib.poutine.Trace())
        with pytest.raises(ValueError, match=r"max tries \(1\) exceeded"):
            lib.poutine.queue(discrete_model(lib, dist), queue=q, max_tries=1)()
    with pytest.raises(ValueError, match="queue of partial traces is empty"):
        mp.poutine.queue(discrete_model(mp, mdist), queue=std_queue.Queue())()


def test_enum_extend_and_escape_helpers_match_pyro():
    from pyro.poutine import util as pyro_util

    from miniprob.poutine import util as mp_util

    out = []
    for (lib, dist, *_), util in zip(libs(), (pyro_util, mp_util), strict=True):
        with lib.poutine.trace() as tr:
            lib.sample("k", dist.Categorical(torch.ones(4)))
            lib.sample("z", dist.Normal(0.0, 1.0))
        k, z = tr.trace.nodes["k"], tr.trace.nodes["z"]
        empty = lib.poutine.Trace()
        out.append(
            (
                [t.nodes["k"]["value"].item() for t in util.enum_extend(empty, k)],
                len(util.enum_extend(empty, k, num_samples=1)),
                util.discrete_escape(empty, k),
                util.discrete_escape(empty, z),
                util.all_escape(empty, z),
                util.all_escape(tr.trace, z),
            )
        )
    assert out[1] == out[0]


# scope, name_count


def scoped_models(lib, dist, scope, name_count):
    def leaf():
        return lib.sample("x", dist.Bernoulli(0.5))

    @scope(prefix="b")
    def nested():
        with scope(prefix="a"):
            return leaf()

    @scope
    def by_name():
        return leaf()

    @name_count
    def counted_scopes():
        for _ in range(3):
            with scope(prefix="a"):
                leaf()

    @name_count
    def counted_inner():
        for _ in range(3):
            with scope(prefix="a", inner=True):
                leaf()

    @name_count
    def counted_inside():
        with scope(prefix="a"):
            for _ in range(3):
                leaf()

    @name_count
    def counted_nested():
        for _ in range(2):
            nested()
            by_name()

    @scope
    def recursive(r=True):
        by_name()
        with scope(prefix="inter"):
            by_name()
            if r:
                recursive(r=False)
        by_name()

    @scope
    def branching(n=2):
        leaf()
        if n:
            branching(n - 1)
            branching(n - 1)

    @name_count
    def counted_recursive():
        recursive()
        branching()

    return [
        nested,
        by_name,
        counted_scopes,
        counted_inner,
        counted_inside,
        counted_nested,
        counted_recursive,
    ]


@pytest.mark.parametrize("index", range(7))
def test_scope_and_name_count_name_sites_as_pyro(index):
    def build(lib, dist):
        _, _, scope, name_count = next(x for x in libs() if x[0] is lib)
        return scoped_models(lib, dist, scope, name_count)[index]

    expected, actual = run_both(build, 0)
    assert_same(expected, actual)


def test_scope_without_a_prefix_raises_as_pyro():
    for _, _, scope, _ in libs():
        with pytest.raises(ValueError, match="no prefix was provided"):
            with scope():
                pass


# plate_stack, subsample, block_plate


def test_plate_stack_matches_pyro():
    def build(lib, dist):
        def model():
            with lib.plate_stack("grid", (2, 3), rightmost_dim=-2):
                return lib.sample("x", dist.Normal(0.0, 1.0))

        return model

    expected, actual = run_both(build, 4)
    assert_same(expected, actual)
    frames = [(f.name, f.dim, f.size) for f in actual.nodes["x"]["cond_indep_stack"]]
    assert frames == [(f.name, f.dim, f.size) for f in expected.nodes["x"]["cond_indep_stack"]]


def test_subsample_matches_pyro():
    data = torch.arange(24.0).reshape(6, 4)

    def build(lib, dist):
        def model():
            with lib.plate("rows", 6, subsample_size=3, dim=-1):
                rows = lib.subsample(data, event_dim=1)
                return lib.sample("x", dist.Normal(rows, 1.0).to_event(1))

        return model

    expected, actual = run_both(build, 7)
    assert_same(expected, actual)
    assert actual.nodes["x"]["value"].shape == (3, 4)


def test_subsample_of_a_wrong_shape_raises_as_pyro():
    for lib, *_ in libs():
        with pytest.raises(ValueError, match=r"invalid shape of pyro.subsample\(..., event_dim=0"):
            with lib.plate("rows", 6, subsample_size=3):
                lib.subsample(torch.zeros(5), event_dim=0)


def test_block_plate_matches_pyro():
    def build(lib, dist):
        def model():
            with lib.plate("outer", 2, dim=-2), lib.plate("data", 3):
                with BLOCK_PLATE[lib]("data"):
                    scale = lib.sample("scale", dist.LogNormal(0.0, 1.0))
                with BLOCK_PLATE[lib](dim=-2):
                    loc = lib.sample("loc", dist.Normal(0.0, 1.0))
                return lib.sample("x", dist.Normal(loc, scale))

        return model

    expected, actual = run_both(build, 6)
    assert_same(expected, actual)
    assert actual.nodes["scale"]["value"].shape == (2, 1)
    assert actual.nodes["loc"]["value"].shape == (3,)


def test_block_plate_errors_as_pyro():
    for lib, *_ in libs():
        with pytest.raises(ValueError, match="Exactly one of name,dim must be specified"):
            with BLOCK_PLATE[lib]():
                pass
        with pytest.raises(ValueError, match="block_plate matched 0 messengers"):
            with lib.plate("data", 3), BLOCK_PLATE[lib]("other"):
                pass
        with lib.plate("data", 3), BLOCK_PLATE[lib]("other", strict=False):
            pass


# Distribution.has_rsample_


def test_has_rsample_matches_pyro():
    for _, dist, *_ in libs():
        d = dist.Normal(torch.zeros(2, requires_grad=True), 1.0)
        assert d.has_rsample_(False) is d and not d.has_rsample
        with pytest.raises(ValueError, match=r"Expected value in \[False,True\], actual 1"):
            d.has_rsample_(1)
        with pytest.raises(AttributeError):
            d.to_event(1).has_rsample_(False)


def test_a_detached_site_is_scored_as_non_reparameterized():
    def model():
        loc = mp.param("loc", torch.zeros(()))
        mp.sample("z", mdist.Normal(loc, 1.0).has_rsample_(False))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tr = mp.poutine.trace(model).get_trace()
    assert tr.nonreparam_stochastic_nodes == ["z"]
    assert not tr.nodes["z"]["value"].requires_grad


def test_queue_as_a_decorator_as_pyro():
    seen = []
    for lib, dist, *_ in libs():
        q = std_queue.Queue()
        q.put(lib.poutine.Trace())
        model = lib.poutine.queue(queue=q)(discrete_model(lib, dist))
        tr = lib.poutine.trace(model).get_trace()
        seen.append((list(tr.nodes), tr.nodes["_RETURN"]["value"], q.qsize()))
    assert seen[1] == seen[0]
    assert seen[1][0] == ["_INPUT", "a", "b", "obs", "_RETURN"]


def score_function_step(lib, dist):
    def model():
        z = lib.sample("z", dist.Normal(0.0, 1.0))
        lib.sample("x", dist.Normal(z, 1.0), obs=torch.tensor(0.5))

    def guide():
        loc = lib.param("loc", torch.tensor(0.3))
        lib.sample("z", dist.Normal(loc, 1.0).has_rsample_(False))

    lib.clear_param_store()
    lib.set_rng_seed(1)
    loss = lib.infer.Trace_ELBO(num_particles=3, vectorize_particles=False)
    surrogate = loss.differentiable_loss(model, guide)
    leaf = lib.get_param_store().get_param("loc").unconstrained()
    return surrogate, torch.autograd.grad(surrogate, leaf)[0]


def test_a_detached_guide_site_gets_pyros_score_function_gradient():
    (ref_loss, ref_grad), (loss, grad) = [score_function_step(*lib[:2]) for lib in libs()]
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-6, atol=0)
