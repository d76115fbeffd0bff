"""Effect handlers: each in its three forms, their arguments and errors, and their laws."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import miniprob as mp
import miniprob.distributions as dist
from miniprob.poutine import block, condition, mask, replay, scale, seed, substitute, trace

SITES = ("a", "b", "c")


def model():
    w = mp.param("w", torch.tensor(1.0))
    a = mp.sample("a", dist.Normal(0.0, 1.0))
    b = mp.sample("b", dist.Normal(a, 1.0))
    c = mp.sample("c", dist.Normal(b, 1.0), obs=torch.tensor(0.5))
    return w, a, b, c


def run_in_form(form, handler, kwargs, fn=model):
    """Run ``fn`` under ``handler`` used as h(fn, ...), @h(...) or with h(...); trace it."""
    with trace() as tr:
        if form == "call":
            handler(fn, **kwargs)()
        elif form == "decorator":
            handler(**kwargs)(fn)()
        else:
            with handler(**kwargs):
                fn()
    return tr.trace


def fixed_trace():
    return condition(model, data={"a": torch.tensor(7.0), "b": torch.tensor(8.0)})


REPLAY_TRACE = None


def replay_trace():
    global REPLAY_TRACE
    if REPLAY_TRACE is None:
        REPLAY_TRACE = trace(model).get_trace()
    return REPLAY_TRACE


def check_scale(tr):
    assert tr.nodes["a"]["scale"] == 0.5 and tr.nodes["c"]["scale"] == 0.5


def check_mask(tr):
    assert tr.nodes["a"]["mask"] is not None and not bool(tr.nodes["a"]["mask"])
    assert tr.log_prob_sum().item() == 0.0


def check_condition(tr):
    assert tr.nodes["a"]["value"].item() == 3.0 and tr.nodes["a"]["is_observed"]
    assert not tr.nodes["b"]["is_observed"]


def check_substitute(tr):
    assert tr.nodes["w"]["value"].item() == 5.0
    assert tr.nodes["a"]["value"].item() != 6.0  # params only, as in Pyro


def check_replay(tr):
    for name in ("a", "b"):
        assert torch.equal(tr.nodes[name]["value"], replay_trace().nodes[name]["value"])


def check_block(tr):
    assert "a" not in tr.nodes and {"w", "b", "c"} <= set(tr.nodes)


def check_seed(tr):
    mp.set_rng_seed(4)
    expected = torch.randn(())
    assert torch.equal(tr.nodes["a"]["value"], expected)


HANDLER_CASES = {
    "scale": (scale, lambda: {"scale": 0.5}, check_scale),
    "mask": (mask, lambda: {"mask": torch.tensor(False)}, check_mask),
    "condition": (condition, lambda: {"data": {"a": torch.tensor(3.0)}}, check_condition),
    "substitute": (
        substitute,
        lambda: {"data": {"w": torch.tensor(5.0), "a": torch.tensor(6.0)}},
        check_substitute,
    ),
    "replay": (replay, lambda: {"trace": replay_trace()}, check_replay),
    "block": (block, lambda: {"hide": ["a"]}, check_block),
    "seed": (seed, lambda: {"rng_seed": 4}, check_seed),
}


@pytest.mark.parametrize("form", ["call", "decorator", "context"])
@pytest.mark.parametrize("name", sorted(HANDLER_CASES))
def test_each_handler_in_each_form(name, form):
    handler, kwargs, check = HANDLER_CASES[name]
    check(run_in_form(form, handler, kwargs()))


@pytest.mark.parametrize("form", ["call", "decorator", "context"])
def test_trace_in_each_form(form):
    if form == "call":
        tr = trace(model).get_trace()
    elif form == "decorator":
        tr = trace()(model).get_trace()
    else:
        with trace() as t:
            model()
        tr = t.trace
    assert [n for n in tr.nodes if not n.startswith("_")] == ["w", "a", "b", "c"]


@pytest.mark.parametrize("name", sorted(HANDLER_CASES))
def test_a_decorator_handler_wraps_several_functions(name):
    """As in Pyro, ``h = handler(...)`` can wrap a model and a guide separately."""
    handler, kwargs, check = HANDLER_CASES[name]
    h = handler(**kwargs())
    calls = []
    wrapped_model = h(lambda: calls.append("model") or model())
    wrapped_other = h(lambda: calls.append("other"))
    with trace() as tr:
        wrapped_model()
    wrapped_other()
    assert calls == ["model", "other"]
    check(tr.trace)


# ---- trace ------------------------------------------------------------------------------------


def test_trace_records_inputs_and_return():
    def f(x, k=1):
        return mp.sample("y", dist.Normal(x, 1.0)) * k

    tr = trace(f).get_trace(torch.tensor(2.0), k=3)
    assert list(tr.nodes) == ["_INPUT", "y", "_RETURN"]
    assert tr.nodes["_INPUT"]["type"] == "args"
    assert tr.nodes["_INPUT"]["args"][0].item() == 2.0 and tr.nodes["_INPUT"]["kwargs"] == {"k": 3}
    assert tr.nodes["_RETURN"]["type"] == "return"
    assert torch.equal(tr.nodes["_RETURN"]["value"], tr.nodes["y"]["value"] * 3)


def test_trace_param_only():
    tr = trace(model, param_only=True).get_trace()
    assert [n for n in tr.nodes if not n.startswith("_")] == ["w"]
    assert tr.nodes["w"]["type"] == "param"


def test_trace_site_fields():
    tr = trace(model).get_trace()
    a, c = tr.nodes["a"], tr.nodes["c"]
    assert a["type"] == "sample" and not a["is_observed"] and a["name"] == "a"
    assert c["is_observed"] and c["value"].item() == 0.5
    assert tr.stochastic_nodes == ["a", "b"]
    assert tr.observation_nodes == ["c"]
    assert tr.param_nodes == ["w"]
    expected = (
        dist.Normal(0.0, 1.0).log_prob(a["value"])
        + dist.Normal(a["value"], 1.0).log_prob(tr.nodes["b"]["value"])
        + dist.Normal(tr.nodes["b"]["value"], 1.0).log_prob(torch.tensor(0.5))
    )
    torch.testing.assert_close(tr.log_prob_sum(), expected)


def test_trace_is_fresh_on_each_run():
    tracer = trace(model)
    first = tracer.get_trace()
    second = tracer.get_trace()
    assert first is not second
    assert not torch.equal(first.nodes["a"]["value"], second.nodes["a"]["value"])


def test_duplicate_sample_site_names_the_site():
    def twice():
        mp.sample("dup", dist.Normal(0.0, 1.0))
        mp.sample("dup", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="'dup'"):
        trace(twice).get_trace()


@pytest.mark.parametrize("first", ["param", "sample"])
def test_param_and_sample_sharing_a_name_names_the_site(first):
    def clash():
        for kind in (first, "sample" if first == "param" else "param"):
            if kind == "param":
                mp.param("same", torch.tensor(1.0))
            else:
                mp.sample("same", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="'same'"):
        trace(clash).get_trace()


def test_a_param_read_twice_is_one_site():
    def f():
        mp.param("p", torch.tensor(1.0))
        return mp.param("p")

    tr = trace(f).get_trace()
    assert tr.param_nodes == ["p"]


# ---- replay -----------------------------------------------------------------------------------


def test_replay_leaves_observed_sites_and_missing_sites_alone():
    guide_tr = trace(lambda: mp.sample("a", dist.Normal(0.0, 1.0))).get_trace()
    tr = trace(replay(model, trace=guide_tr)).get_trace()
    assert torch.equal(tr.nodes["a"]["value"], guide_tr.nodes["a"]["value"])
    assert tr.nodes["c"]["value"].item() == 0.5  # observed: not replayed
    assert tr.nodes["b"]["value"].shape == ()  # absent from the replayed trace: sampled


def test_replay_copies_infer_and_rejects_observed_sources():
    source = trace(lambda: mp.sample("a", dist.Normal(0.0, 1.0), infer={"k": 1})).get_trace()
    tr = trace(replay(model, trace=source)).get_trace()
    assert tr.nodes["a"]["infer"] == {"k": 1}
    observed = trace(condition(model, data={"a": torch.tensor(1.0)})).get_trace()
    with pytest.raises(RuntimeError, match="'a'"):
        replay(model, trace=observed)()


def test_replay_params():
    value = torch.tensor(9.0)
    tr = trace(replay(model, params={"w": value})).get_trace()
    assert tr.nodes["w"]["value"] is value
    assert "w" not in mp.get_param_store()


def test_replay_needs_something_to_replay():
    with pytest.raises(ValueError, match="trace= or params="):
        replay(model)


# ---- block ------------------------------------------------------------------------------------


def visible(**block_kwargs):
    tr = trace(block(model, **block_kwargs)).get_trace()
    return [n for n in tr.nodes if not n.startswith("_")]


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, []),
        ({"hide_all": False}, ["w", "a", "b", "c"]),
        ({"expose_all": True, "hide_all": False}, ["w", "a", "b", "c"]),
        ({"hide": ["a", "w"]}, ["b", "c"]),
        ({"hide": []}, ["w", "a", "b", "c"]),
        ({"expose": ["b"]}, ["b"]),
        ({"expose": []}, []),
        ({"hide_types": ["param"]}, ["a", "b", "c"]),
        ({"hide_types": ["observe"]}, ["w", "a", "b"]),
        ({"hide_types": ["sample"]}, ["w", "c"]),
        ({"expose_types": ["sample"]}, ["a", "b"]),
        ({"expose_types": ["param", "observe"]}, ["w", "c"]),
        ({"hide_fn": lambda msg: msg["name"] in ("a", "c")}, ["w", "b"]),
        ({"expose_fn": lambda msg: msg["type"] == "param"}, ["w"]),
    ],
)
def test_block_rules(kwargs, expected):
    assert visible(**kwargs) == expected


def test_block_argument_errors():
    with pytest.raises(ValueError, match="hide_fn or expose_fn"):
        block(hide_fn=lambda m: True, expose_fn=lambda m: True)
    with pytest.raises(ValueError, match="'a'"):
        block(hide=["a"], expose=["a"])
    with pytest.raises(ValueError, match="'param'"):
        block(hide_types=["param"], expose_types=["param"])


def test_blocked_sites_still_take_effect_inside():
    with trace() as outer:
        with block():
            with trace() as inner:
                model()
    assert list(outer.trace.nodes) == []
    assert [n for n in inner.trace.nodes] == ["w", "a", "b", "c"]
    assert "w" in mp.get_param_store()


BLOCK_CONFIGS = st.fixed_dictionaries(
    {},
    optional={
        "hide": st.lists(st.sampled_from(("w",) + SITES), unique=True),
        "expose": st.lists(st.sampled_from(("w",) + SITES), unique=True),
        "hide_types": st.lists(st.sampled_from(("sample", "observe", "param")), unique=True),
        "expose_types": st.lists(st.sampled_from(("sample", "observe", "param")), unique=True),
    },
).filter(
    lambda c: (
        not set(c.get("hide", ())) & set(c.get("expose", ()))
        and not set(c.get("hide_types", ())) & set(c.get("expose_types", ()))
    )
)


@settings(max_examples=40, deadline=None)
@given(BLOCK_CONFIGS)
def test_block_is_idempotent(config):
    once = trace(block(model, **config)).get_trace()
    twice = trace(block(block(model, **config), **config)).get_trace()
    assert list(once.nodes) == list(twice.nodes)


@settings(max_examples=40, deadline=None)
@given(BLOCK_CONFIGS)
def test_block_hides_what_pyro_hides(config):
    pyro = pytest.importorskip("pyro")
    import pyro.distributions as pdist

    def program(pyro, dist):
        pyro.param("w", torch.tensor(1.0))
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        b = pyro.sample("b", dist.Normal(a, 1.0))
        pyro.sample("c", dist.Normal(b, 1.0), obs=torch.tensor(0.5))

    expected = pyro.poutine.trace(pyro.poutine.block(program, **config)).get_trace(pyro, pdist)
    actual = trace(block(program, **config)).get_trace(mp, dist)
    assert list(actual.nodes) == list(expected.nodes)
    pyro.clear_param_store()


# ---- condition --------------------------------------------------------------------------------


def test_condition_with_a_trace():
    source = trace(model).get_trace()
    tr = trace(condition(model, data=source)).get_trace()
    for name in ("a", "b"):
        assert tr.nodes[name]["is_observed"]
        assert torch.equal(tr.nodes[name]["value"], source.nodes[name]["value"])


def test_condition_checks_the_support():
    def positive():
        return mp.sample("rate", dist.Gamma(2.0, 1.0))

    conditioned = condition(positive, data={"rate": torch.tensor(-1.0)})
    assert conditioned().item() == -1.0  # checked when scored, as in Pyro
    with pytest.raises(ValueError, match="site 'rate'"):
        trace(conditioned).get_trace().log_prob_sum()
    mp.enable_validation(False)
    trace(conditioned).get_trace().log_prob_sum()


def test_condition_needs_data():
    with pytest.raises(ValueError, match="data="):
        condition(model)


# ---- scale, mask ------------------------------------------------------------------------------


def test_scale_multiplies_log_prob_float_and_tensor():
    base = trace(model).get_trace()
    lp = base.log_prob_sum()
    for s in (0.25, torch.tensor(3.0)):
        tr = trace(scale(replay(model, trace=base), scale=s)).get_trace()
        torch.testing.assert_close(tr.log_prob_sum(), lp * s)


@pytest.mark.parametrize(
    "bad",
    [
        0.0,
        -1.0,
        float("inf"),
        float("nan"),
        torch.tensor(0.0),
        torch.tensor([1.0, -2.0]),
        torch.tensor(float("inf")),
        torch.tensor(float("nan")),
        "two",
    ],
)
def test_scale_rejects_non_positive_or_non_finite(bad):
    with pytest.raises(ValueError, match="'scale'"):
        scale(scale=bad)


def test_mask_accepts_bools_and_combines_nested_masks():
    a, b = torch.tensor([True, True, False]), torch.tensor([True, False, True])
    with trace() as tr, mask(mask=a), mask(mask=b):
        mp.sample("x", dist.Normal(torch.zeros(3), 1.0))
    assert tr.trace.nodes["x"]["mask"].tolist() == [True, False, False]
    lp = dist.Normal(0.0, 1.0).log_prob(tr.trace.nodes["x"]["value"])
    torch.testing.assert_close(tr.trace.log_prob_sum(), lp[0])
    with trace() as tr, mask(mask=True):
        mp.sample("y", dist.Normal(0.0, 1.0))
    assert bool(tr.trace.nodes["y"]["mask"])


@pytest.mark.parametrize("bad", [torch.tensor([1.0, 0.0]), torch.tensor([1, 0]), 1, None, "yes"])
def test_mask_rejects_non_bool(bad):
    with pytest.raises(ValueError, match="'mask'"):
        mask(mask=bad)


# ---- seed -------------------------------------------------------------------------------------


def test_seed_is_reproducible_and_restores_the_rng_state():
    mp.set_rng_seed(0)
    state = torch.get_rng_state()
    first = seed(model, rng_seed=5)()
    assert torch.equal(torch.get_rng_state(), state)
    second = seed(model, rng_seed=5)()
    assert torch.equal(first[1], second[1]) and torch.equal(first[2], second[2])
    with pytest.raises(KeyError), seed(rng_seed=6):
        torch.randn(3)
        raise KeyError("escape")
    assert torch.equal(torch.get_rng_state(), state)


def test_seed_needs_an_int():
    with pytest.raises(ValueError, match="'rng_seed'"):
        seed(rng_seed=1.5)


# ---- substitute -------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:pyro.module data did not find params")  # Pyro's, for "x"
def test_substitute_replaces_params_only_as_in_pyro(pyro_ref):
    w, a = torch.tensor(5.0), torch.tensor(6.0)
    tr = trace(substitute(model, data={"w": w, "a": a})).get_trace()
    assert tr.nodes["w"]["value"] is w
    assert "w" not in mp.get_param_store()

    def draws(lib):
        d = lib.distributions

        def f():
            lib.param("w", torch.tensor(1.0))
            return lib.sample("x", d.Normal(0.0, 1.0))

        lib.set_rng_seed(0)
        sub = lib.poutine.substitute(f, data={"w": w, "x": torch.tensor(7.0)})
        node = lib.poutine.trace(sub).get_trace().nodes["x"]
        return node["value"].item(), node["is_observed"]

    assert draws(mp) == draws(pyro_ref)
    assert draws(mp)[0] != 7.0


def test_trace_param_only_records_param_sites_only(pyro_ref):
    def names(lib):
        def guide():
            lib.param("a", torch.tensor(1.0))
            lib.sample("x", lib.distributions.Normal(0.0, 1.0))

        return list(lib.poutine.trace(guide, param_only=True).get_trace().nodes)

    assert names(mp) == names(pyro_ref) == ["a"]


def test_substitute_needs_data():
    with pytest.raises(ValueError, match="data="):
        substitute(model)


# ---- laws -------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.floats(0.01, 100.0),
    st.floats(0.01, 100.0),
    st.booleans(),
)
def test_nested_scales_multiply(s1, s2, as_tensor):
    outer = torch.tensor(s1) if as_tensor else s1
    base = trace(model).get_trace()
    tr = trace(scale(scale(replay(model, trace=base), scale=s2), scale=outer)).get_trace()
    for name in ("a", "b", "c"):
        torch.testing.assert_close(
            torch.as_tensor(tr.nodes[name]["scale"], dtype=torch.float32),
            torch.tensor(s1 * s2, dtype=torch.float32),
        )
    torch.testing.assert_close(tr.log_prob_sum(), base.log_prob_sum() * (s1 * s2))


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**16),
    st.dictionaries(st.sampled_from(SITES), st.floats(-3.0, 3.0, width=32), max_size=3),
)
def test_trace_of_condition_equals_condition_of_trace(rng_seed, data):
    data = {k: torch.tensor(v) for k, v in data.items()}
    mp.set_rng_seed(rng_seed)
    inner = trace(condition(model, data=data)).get_trace()
    mp.set_rng_seed(rng_seed)
    with condition(data=data), trace() as t:
        model()
    outer = t.trace
    names = [n for n in inner.nodes if not n.startswith("_")]
    assert names == list(outer.nodes)
    for name in names:
        assert torch.equal(inner.nodes[name]["value"], outer.nodes[name]["value"])
        assert inner.nodes[name].get("is_observed") == outer.nodes[name].get("is_observed")
    torch.testing.assert_close(inner.log_prob_sum(), outer.log_prob_sum(), rtol=0, atol=0)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**16), st.integers(0, 2**16))
def test_replaying_a_trace_reproduces_its_values(seed_a, seed_b):
    def plated():
        z = mp.sample("z", dist.Normal(0.0, 1.0))
        with mp.plate("data", 5, subsample_size=2):
            x = mp.sample("x", dist.Normal(z, 1.0))
        return x

    mp.set_rng_seed(seed_a)
    original = trace(plated).get_trace()
    mp.set_rng_seed(seed_b)
    replayed = trace(replay(plated, trace=original)).get_trace()
    for name in ("z", "x", "data"):
        assert torch.equal(replayed.nodes[name]["value"], original.nodes[name]["value"])
    assert torch.equal(replayed.nodes["_RETURN"]["value"], original.nodes["_RETURN"]["value"])
    torch.testing.assert_close(replayed.log_prob_sum(), original.log_prob_sum(), rtol=0, atol=0)


def test_log_prob_sum_takes_a_site_filter_or_none():
    def model():
        mp.sample("a", dist.Normal(0.0, 1.0))
        mp.sample("b", dist.Normal(0.0, 1.0))

    tr = trace(model).get_trace()
    only_a = tr.log_prob_sum(lambda name, site: name == "a")
    assert torch.equal(only_a, dist.Normal(0.0, 1.0).log_prob(tr.nodes["a"]["value"]))
    assert torch.equal(tr.log_prob_sum(None), tr.log_prob_sum())


def test_replay_takes_a_hand_built_trace_of_values_alone():
    # Pyro's own tests replay traces built with add_node(name, type=..., value=...), no "fn".
    from miniprob.poutine import Trace

    tr = Trace()
    tr.add_node("x", type="sample", name="x", value=torch.tensor(3.0), is_observed=False, infer={})
    model = lambda: mp.sample("x", dist.Normal(0.0, 1.0))  # noqa: E731
    assert replay(model, trace=tr)().item() == 3.0
