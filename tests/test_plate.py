"""plate: dim allocation, broadcasting, subsampling, iterated plates, params inside plates."""

import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import miniprob as mp
import miniprob.distributions as dist
from miniprob.poutine import condition, replay, trace
from miniprob.runtime import CondIndepStackFrame, Messenger


def frames(site):
    return [(f.name, f.dim, f.size) for f in site["cond_indep_stack"]]


# ---- dims -------------------------------------------------------------------------------------


def test_auto_dims_are_allocated_from_the_right():
    with trace() as tr:
        with mp.plate("outer", 2) as outer:
            with mp.plate("inner", 3):
                x = mp.sample("x", dist.Normal(0.0, 1.0))
            y = mp.sample("y", dist.Normal(0.0, 1.0))
    assert outer.tolist() == [0, 1]
    assert x.shape == (3, 2) and y.shape == (2,)
    assert frames(tr.trace.nodes["x"]) == [("outer", -1, 2), ("inner", -2, 3)]  # outermost first
    assert frames(tr.trace.nodes["y"]) == [("outer", -1, 2)]


def test_explicit_dims_and_auto_dims_skip_taken_ones():
    with mp.plate("a", 2, dim=-1), mp.plate("b", 3) as _, mp.plate("c", 4, dim=-4):
        x = mp.sample("x", dist.Normal(0.0, 1.0))
    assert x.shape == (4, 1, 3, 2)
    with mp.plate("lone", 5, dim=-3):
        assert mp.sample("y", dist.Normal(0.0, 1.0)).shape == (5, 1, 1)


def test_dims_are_freed_on_exit():
    with mp.plate("a", 2):
        pass
    with mp.plate("b", 3) as idx:
        assert mp.sample("x", dist.Normal(0.0, 1.0)).shape == (3,)
    assert idx.tolist() == [0, 1, 2]


def test_two_plates_claiming_one_dim_names_both():
    with pytest.raises(ValueError, match="'second'.*'first'|'first'.*'second'"):
        with mp.plate("first", 2, dim=-2), mp.plate("second", 3, dim=-2):
            pass
    with mp.plate("again", 2, dim=-2):  # the failed entry left nothing behind
        pass


def test_duplicate_active_plate_name_and_bad_dims():
    with pytest.raises(ValueError, match="'p'"):
        with mp.plate("p", 2), mp.plate("p", 2):
            pass
    with pytest.raises(ValueError, match="dim < 0"):
        mp.plate("q", 2, dim=0)
    with pytest.raises(ValueError, match="size"):
        mp.plate("r", 0)


def test_dims_are_per_thread():
    barrier = threading.Barrier(2, timeout=10)
    shapes, errors = {}, []

    def worker(tag, size):
        try:
            with mp.plate("data", size):
                barrier.wait()
                shapes[tag] = mp.sample("x", dist.Normal(0.0, 1.0)).shape
                barrier.wait()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=args) for args in (("a", 2), ("b", 3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert shapes == {"a": (2,), "b": (3,)}


# ---- broadcasting -----------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.integers(1, 4), min_size=1, max_size=3),
    st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_batch_shapes_broadcast_to_the_plates(sizes, ones):
    """A distribution's batch shape, with 1 or the plate's size at each plate dim, is expanded
    to cover every enclosing plate."""
    n = len(sizes)
    batch = [1 if ones[i] else sizes[i] for i in range(n)]  # batch[i] sits at dim -n + i
    with mp.plate("p0", sizes[0], dim=-n):
        plates = [mp.plate(f"p{i}", sizes[i], dim=-n + i) for i in range(1, n)]
        for p in plates:
            p.__enter__()
        try:
            with trace() as tr:
                x = mp.sample("x", dist.Normal(torch.zeros(batch), 1.0))
        finally:
            for p in reversed(plates):
                p.__exit__(None, None, None)
    assert x.shape == tuple(sizes)
    assert tr.trace.nodes["x"]["fn"].batch_shape == tuple(sizes)
    assert tr.trace.log_prob_sum().shape == ()


def test_event_dims_are_left_alone():
    with mp.plate("data", 4):
        x = mp.sample("x", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    assert x.shape == (4, 3)


def test_batch_dims_right_of_the_plates_are_kept():
    with mp.plate("rows", 2, dim=-2):
        x = mp.sample("x", dist.Normal(torch.zeros(5), 1.0))
    assert x.shape == (2, 5)


def test_a_batch_shape_that_does_not_fit_names_site_and_plate():
    with pytest.raises(ValueError, match=r"'x'.*'data'"):
        with mp.plate("data", 5):
            mp.sample("x", dist.Normal(torch.zeros(4), 1.0))


def test_two_frames_on_one_dim_must_agree_even_from_size_one():
    # A handler of the user's adds a frame on the dim a plate uses: sizes 1 and 5 disagree.
    class ExtraFrame(Messenger):
        def process_message(self, msg):
            frame = CondIndepStackFrame("extra", -1, 1, 0, 1)
            msg["cond_indep_stack"] = (frame,) + msg["cond_indep_stack"]

    with pytest.raises(ValueError, match=r"'x'.*'data'.*size 5.*has size 1"):
        with ExtraFrame(), mp.plate("data", 5):
            mp.sample("x", dist.Normal(0.0, 1.0))


def test_plate_without_size_does_not_broadcast():
    with mp.plate("any") as idx:
        x = mp.sample("x", dist.Normal(torch.zeros(7), 1.0))
    assert idx is None and x.shape == (7,)


def test_observed_values_inside_a_plate():
    data = torch.arange(6.0).reshape(2, 3)
    with trace() as tr, mp.plate("cols", 3), mp.plate("rows", 2):
        mp.sample("obs", dist.Normal(0.0, 1.0), obs=data)
    expected = dist.Normal(0.0, 1.0).log_prob(data).sum()
    torch.testing.assert_close(tr.trace.log_prob_sum(), expected)


# ---- subsampling ------------------------------------------------------------------------------


def test_subsampling_scales_and_draws_distinct_indices():
    data = torch.arange(100.0)
    with trace() as tr:
        with mp.plate("data", 100, subsample_size=10) as idx:
            mp.sample("obs", dist.Normal(0.0, 100.0), obs=data[idx])
    assert idx.shape == (10,) and len(set(idx.tolist())) == 10
    assert 0 <= idx.min() and idx.max() < 100
    site = tr.trace.nodes["obs"]
    assert site["scale"] == 10.0
    assert site["cond_indep_stack"][0].full_size == 100
    expected = 10.0 * dist.Normal(0.0, 100.0).log_prob(data[idx]).sum()
    torch.testing.assert_close(tr.trace.log_prob_sum(), expected)
    assert tr.trace.nodes["data"]["value"] is idx  # the index site, for replay


def test_subsample_indices_reach_the_model_through_replay():
    def guide():
        with mp.plate("data", 50, subsample_size=5) as idx:
            mp.sample("z", dist.Normal(torch.zeros(5), 1.0))
        return idx

    def model():
        with mp.plate("data", 50, subsample_size=5) as idx:
            mp.sample("z", dist.Normal(0.0, 1.0))
        return idx

    guide_tr = trace(guide).get_trace()
    model_tr = trace(replay(model, trace=guide_tr)).get_trace()
    guide_idx = guide_tr.nodes["_RETURN"]["value"]
    assert torch.equal(model_tr.nodes["_RETURN"]["value"], guide_idx)
    assert torch.equal(model_tr.nodes["data"]["value"], guide_idx)
    assert torch.equal(model_tr.nodes["z"]["value"], guide_tr.nodes["z"]["value"])


def test_explicit_subsample():
    subsample = torch.tensor([3, 1, 4])
    with trace() as tr, mp.plate("data", 10, subsample=subsample) as idx:
        x = mp.sample("x", dist.Normal(0.0, 1.0))
    assert torch.equal(idx, subsample) and x.shape == (3,)
    assert tr.trace.nodes["x"]["scale"] == pytest.approx(10 / 3)
    assert "data" in tr.trace.nodes


def test_full_plate_records_its_indices_unscaled():
    # As in Pyro, every sized plate records its indices as a sample site.
    with trace() as tr, mp.plate("data", 4, subsample_size=4) as idx:
        mp.sample("x", dist.Normal(0.0, 1.0))
    assert list(tr.trace.nodes) == ["data", "x"] and idx.tolist() == [0, 1, 2, 3]
    assert tr.trace.nodes["data"]["value"].tolist() == [0, 1, 2, 3]
    assert tr.trace.nodes["x"]["scale"] == 1.0


def test_model_plate_without_subsample_follows_the_guides_subsample():
    data = torch.arange(10.0)

    def guide():
        with mp.plate("data", 10, subsample_size=3):
            mp.sample("z", dist.Normal(0.0, 1.0))

    def model():
        with mp.plate("data", 10) as idx:
            mp.sample("z", dist.Normal(0.0, 1.0))
            mp.sample("obs", dist.Normal(0.0, 1.0), obs=data[idx])
        return idx

    guide_trace = trace(guide).get_trace()
    model_trace = trace(replay(model, trace=guide_trace)).get_trace()
    assert torch.equal(model_trace.nodes["_RETURN"]["value"], guide_trace.nodes["data"]["value"])
    assert model_trace.nodes["obs"]["scale"] == pytest.approx(10 / 3)


@pytest.mark.parametrize("bad", [torch.tensor([0, 10]), torch.tensor([-1, 2])])
def test_out_of_range_subsample_names_the_plate(bad):
    with pytest.raises(ValueError, match=r"'data'.*\[0, 10\)"):
        mp.plate("data", 10, subsample=bad)


def test_subsample_size_must_match_subsample():
    with pytest.raises(ValueError, match="subsample_size"):
        mp.plate("data", 10, subsample_size=2, subsample=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="needs a size"):
        mp.plate("data", subsample_size=2)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 30), st.data())
def test_subsample_scale_is_size_over_subsample_size(size, data):
    sub = data.draw(st.integers(1, size))
    with trace() as tr, mp.plate("p", size, subsample_size=sub) as idx:
        mp.sample("x", dist.Normal(0.0, 1.0))
    assert len(idx) == sub and len(set(idx.tolist())) == sub
    assert tr.trace.nodes["x"]["scale"] == pytest.approx(size / sub)


# ---- iterated plates --------------------------------------------------------------------------


def test_iterated_plate_counter_names_and_frames():
    seq = mp.plate("seq", 3)
    with trace() as tr:
        for i in seq:
            mp.sample(f"x_{i}", dist.Normal(0.0, 1.0))
    assert list(tr.trace.nodes) == ["x_0", "x_1", "x_2"]
    stacks = [tr.trace.nodes[f"x_{i}"]["cond_indep_stack"] for i in range(3)]
    assert [(s[0].name, s[0].dim, s[0].size, s[0].counter) for s in stacks] == [
        ("seq", None, 3, 1),
        ("seq", None, 3, 2),
        ("seq", None, 3, 3),
    ]
    assert all(not s[0].vectorized for s in stacks)
    assert all(tr.trace.nodes[f"x_{i}"]["value"].shape == () for i in range(3))


def test_iterated_plate_inside_a_vectorized_plate():
    with trace() as tr, mp.plate("batch", 4):
        for i in mp.plate("steps", 2):
            mp.sample(f"x_{i}", dist.Normal(0.0, 1.0))
    assert tr.trace.nodes["x_1"]["value"].shape == (4,)
    assert [f.name for f in tr.trace.nodes["x_1"]["cond_indep_stack"]] == ["batch", "steps"]


def test_iterated_subsampled_plate_scales():
    with trace() as tr:
        for i in mp.plate("seq", 10, subsample_size=2):
            mp.sample(f"x_{i}", dist.Normal(0.0, 1.0))
    names = [n for n in tr.trace.nodes if n != "seq"]
    assert len(names) == 2
    assert all(tr.trace.nodes[n]["scale"] == 5.0 for n in names)


def test_a_plate_is_either_iterated_or_vectorized():
    p = mp.plate("p", 2)
    with p:
        pass
    with pytest.raises(ValueError, match="'p'"):
        list(p)
    q = mp.plate("q", 2)
    list(q)
    with pytest.raises(ValueError, match="'q'"):
        q.__enter__()


def test_breaking_out_of_an_iterated_plate_leaves_the_stack_clean():
    for _ in mp.plate("seq", 5):
        break
    from miniprob.runtime import get_stack

    assert get_stack() == ()


# ---- params inside plates ---------------------------------------------------------------------


def test_param_with_event_dim_is_subsampled_with_its_plate():
    init = torch.arange(20.0).reshape(10, 2)
    with mp.plate("data", 10, subsample_size=3) as idx:
        p = mp.param("p", init.clone(), event_dim=1)
    assert p.shape == (3, 2)
    assert torch.equal(p, init[idx])
    assert mp.get_param_store()["p"].shape == (10, 2)  # the store keeps the full parameter
    p.sum().backward()
    grad = mp.get_param_store().unconstrained("p").grad
    assert grad[idx].eq(1).all() and grad.sum() == 6


def test_param_with_event_dim_of_the_wrong_size_names_param_and_plate():
    with pytest.raises(ValueError, match=r"'p'.*'data'"):
        with mp.plate("data", 10, subsample_size=3):
            mp.param("p", torch.zeros(7, 2), event_dim=1)


def test_param_without_event_dim_is_not_subsampled():
    with mp.plate("data", 10, subsample_size=3):
        assert mp.param("p", torch.zeros(10)).shape == (10,)


def test_condition_inside_a_subsampled_plate():
    data = torch.randn(20)

    def model():
        with mp.plate("data", 20, subsample_size=4) as idx:
            mp.sample("obs", dist.Normal(0.0, 1.0))
        return idx

    mp.set_rng_seed(0)
    idx = model()
    mp.set_rng_seed(0)
    tr = trace(condition(model, data={"obs": data[idx]})).get_trace()
    assert tr.nodes["obs"]["is_observed"]
    expected = 5.0 * dist.Normal(0.0, 1.0).log_prob(data[idx]).sum()
    torch.testing.assert_close(tr.log_prob_sum(), expected)


def test_conditioning_a_plate_index_site_fixes_the_subsample():
    """As in Pyro: the index site is a sample site, so condition can give the indices."""

    def model():
        with mp.plate("data", 10, subsample_size=3) as idx:
            mp.sample("x", dist.Normal(0.0, 1.0))
        return idx

    fixed = torch.tensor([1, 5, 7])
    tr = trace(condition(model, data={"data": fixed})).get_trace()
    assert torch.equal(tr.nodes["_RETURN"]["value"], fixed)
    assert tr.nodes["x"]["scale"] == pytest.approx(10 / 3)
