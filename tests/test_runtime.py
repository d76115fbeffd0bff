"""The handler stack and apply_stack: processing order, stop, per-thread and per-task stacks,
exits through exceptions, and sample/param outside any handler."""

import asyncio
import threading

import pytest
import torch

import miniprob as mp
import miniprob.distributions as dist
from miniprob import poutine
from miniprob.runtime import Messenger, am_i_wrapped, apply_stack, get_stack, new_message


class Recorder(Messenger):
    """Appends ``(phase, tag, site name)`` to a shared log; optionally stops or sets a value."""

    def __init__(self, tag, log, stop=False, value=None):
        super().__init__()
        self.tag, self.log, self.stop, self.value = tag, log, stop, value

    def process_message(self, msg):
        self.log.append(("process", self.tag, msg["name"]))
        if self.value is not None:
            msg["value"] = self.value
        if self.stop:
            msg["stop"] = True

    def postprocess_message(self, msg):
        self.log.append(("post", self.tag, msg["name"]))


def normal_site(name="x"):
    return mp.sample(name, dist.Normal(0.0, 1.0))


# ---- processing order -------------------------------------------------------------------------


def test_process_innermost_first_postprocess_outermost_first():
    log = []
    with Recorder("outer", log), Recorder("middle", log), Recorder("inner", log):
        normal_site()
    assert log == [
        ("process", "inner", "x"),
        ("process", "middle", "x"),
        ("process", "outer", "x"),
        ("post", "outer", "x"),
        ("post", "middle", "x"),
        ("post", "inner", "x"),
    ]


def test_stop_halts_outer_handlers():
    log = []
    with Recorder("outer", log), Recorder("stopper", log, stop=True), Recorder("inner", log):
        normal_site()
    assert log == [
        ("process", "inner", "x"),
        ("process", "stopper", "x"),
        ("post", "stopper", "x"),
        ("post", "inner", "x"),
    ]


def test_a_value_given_by_a_handler_skips_the_default_effect():
    given = torch.tensor(4.0)
    with Recorder("given", [], value=given):
        state = torch.get_rng_state()
        x = normal_site()
        assert torch.equal(torch.get_rng_state(), state)  # nothing was drawn
    assert x is given


def test_continuation_runs_after_postprocessing():
    log = []
    msg = new_message("sample", "x", dist.Normal(0.0, 1.0))
    msg["continuation"] = lambda m: log.append(("continuation", m["name"]))
    with Recorder("h", log):
        apply_stack(msg)
    assert log == [("process", "h", "x"), ("post", "h", "x"), ("continuation", "x")]
    assert msg["done"] and msg["value"].shape == ()


def test_get_stack_lists_handlers_outermost_first():
    assert get_stack() == () and not am_i_wrapped()
    a, b = Recorder("a", []), Recorder("b", [])
    with a:
        with b:
            assert get_stack() == (a, b) and am_i_wrapped()
        assert get_stack() == (a,)
    assert get_stack() == ()


# ---- per-thread and per-task stacks -----------------------------------------------------------


def test_threads_do_not_see_each_others_handlers():
    """Two threads, each inside its own handlers at the same moment (Pyro's global list would
    mix them up: each thread's sites would reach the other's handlers)."""
    barrier = threading.Barrier(2, timeout=10)
    results, errors = {}, []

    def worker(tag):
        try:
            log = []
            recorder = Recorder(tag, log)
            with poutine.trace() as tr, recorder:
                barrier.wait()  # both threads are now inside their handlers
                with mp.plate("data", 3):
                    normal_site(f"x_{tag}")
                barrier.wait()  # both have sampled before either leaves
                stack = get_stack()
            results[tag] = (log, list(tr.trace.nodes), stack, recorder, get_stack())
        except BaseException as e:  # surfaced in the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(tag,)) for tag in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for tag in ("a", "b"):
        log, nodes, stack, recorder, after = results[tag]
        # Each thread's handlers saw its own plate's index site and its own sample site only.
        assert log == [
            ("process", tag, "data"),
            ("post", tag, "data"),
            ("process", tag, f"x_{tag}"),
            ("post", tag, f"x_{tag}"),
        ]
        assert nodes == ["data", f"x_{tag}"]
        assert len(stack) == 2 and stack[1] is recorder
        assert after == ()
    assert get_stack() == ()


def test_asyncio_tasks_are_isolated():
    with mp.plate("warm_up", 2):  # the main context has used plates before the tasks start
        normal_site()

    async def task(tag, other_started, my_started):
        log = []
        with Recorder(tag, log), poutine.trace() as tr, mp.plate("data", 3):
            my_started.set()
            await other_started.wait()  # the other task is inside its handlers now
            x = normal_site(f"x_{tag}")
            await asyncio.sleep(0)
        return log, list(tr.trace.nodes), x.shape

    async def main():
        a, b = asyncio.Event(), asyncio.Event()
        return await asyncio.gather(task("a", b, a), task("b", a, b))

    for tag, (log, nodes, shape) in zip("ab", asyncio.run(main()), strict=True):
        # The plate is entered inside the handlers, so they see its index site too.
        assert log == [
            ("process", tag, "data"),
            ("post", tag, "data"),
            ("process", tag, f"x_{tag}"),
            ("post", tag, f"x_{tag}"),
        ]
        assert nodes == ["data", f"x_{tag}"]
        assert shape == (3,)
    assert get_stack() == ()


# ---- exits through exceptions -----------------------------------------------------------------


def test_exception_exit_removes_the_handler_and_everything_above_it():
    outer = Recorder("outer", [])
    before = get_stack()
    with outer:
        a, b = Recorder("a", []), Recorder("b", [])
        with pytest.raises(RuntimeError, match="boom"):
            with a:
                b.__enter__()  # never exited: the exception skips it
                raise RuntimeError("boom")
        assert get_stack() == (outer,)
    assert get_stack() == before


def test_out_of_order_exit_drops_the_handlers_above():
    a, b, c = Recorder("a", []), Recorder("b", []), Recorder("c", [])
    a.__enter__()
    b.__enter__()
    c.__enter__()
    b.__exit__(ValueError, ValueError("x"), None)
    assert get_stack() == (a,)
    a.__exit__(None, None, None)
    assert get_stack() == ()


def test_exception_inside_a_model_leaves_the_stack_as_before():
    def model():
        with mp.plate("p", 2):
            normal_site()
            raise KeyError("inside")

    with pytest.raises(KeyError):
        poutine.trace(poutine.scale(model, scale=0.5)).get_trace()
    assert get_stack() == ()
    with mp.plate("p", 2):  # the plate's name and dim were freed
        assert normal_site().shape == (2,)


# ---- outside any handler ----------------------------------------------------------------------


def test_sample_outside_handlers_draws_like_the_distribution():
    mp.set_rng_seed(3)
    x = mp.sample("x", dist.Normal(torch.zeros(2), 1.0))
    mp.set_rng_seed(3)
    assert torch.equal(x, torch.distributions.Normal(torch.zeros(2), 1.0).rsample())
    mp.set_rng_seed(3)
    k = mp.sample("k", dist.Poisson(3.0), sample_shape=(4,))
    mp.set_rng_seed(3)
    assert torch.equal(k, torch.distributions.Poisson(3.0).sample((4,)))


def test_sample_outside_handlers_returns_obs():
    obs = torch.tensor([1.0, 2.0])
    assert mp.sample("x", dist.Normal(0.0, 1.0), obs=obs) is obs


def test_param_outside_handlers_creates_then_reads():
    p = mp.param("p", torch.tensor(2.0), constraint=dist.constraints.positive)
    assert "p" in mp.get_param_store()
    assert p.item() == pytest.approx(2.0)
    assert mp.param("p").item() == pytest.approx(2.0)


def test_outside_handlers_matches_pyro(pyro_ref):
    import pyro.distributions as pdist

    def program(pyro, dist):
        a = pyro.sample("a", dist.Normal(torch.zeros(3), 1.0))
        b = pyro.sample("b", dist.Bernoulli(0.3), sample_shape=(2,))
        c = pyro.sample("c", dist.Gamma(2.0, 1.0))
        p = pyro.param("p", lambda: torch.ones(2) * 0.5, constraint=dist.constraints.unit_interval)
        return a, b, c, p, pyro.param("p")

    pyro_ref.set_rng_seed(11)
    expected = program(pyro_ref, pdist)
    mp.set_rng_seed(11)
    actual = program(mp, dist)
    for e, a in zip(expected, actual, strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


def test_handlers_written_for_pyro_run_as_in_pyro(pyro_ref):
    """Pyro's hook names: _pyro_sample / _pyro_post_sample / _pyro_param, _process_message /
    _postprocess_message overrides, and msg["stop"] set in a hook."""
    import importlib

    def run(lib):
        messenger = importlib.import_module(lib.__name__ + ".poutine.messenger").Messenger
        d = lib.distributions

        class LogJoint(messenger):
            def __init__(self, data):
                super().__init__()
                self.data, self.logp = data, 0.0

            def _pyro_sample(self, msg):
                if msg["name"] in self.data:
                    msg["value"], msg["done"] = self.data[msg["name"]], True

            def _pyro_post_sample(self, msg):
                self.logp = self.logp + msg["fn"].log_prob(msg["value"]).sum()

            def _pyro_param(self, msg):
                msg["value"], msg["done"] = torch.tensor(42.0), True

        class Track(messenger):
            def __init__(self):
                super().__init__()
                self.names = []

            def _postprocess_message(self, msg):
                self.names.append(msg["name"])

        class Hide(messenger):
            def _pyro_sample(self, msg):
                msg["stop"] = True

        def scale(guess):
            w = lib.sample("weight", d.Normal(guess + lib.param("p", torch.tensor(0.0)), 1.0))
            return lib.sample("measurement", d.Normal(w, 0.75))

        joint = LogJoint({"weight": torch.tensor(8.0), "measurement": torch.tensor(9.5)})
        with joint:
            scale(8.5)
        track = Track()
        with track:
            scale(8.5)
        with lib.poutine.trace() as tr, Hide():
            scale(8.5)
        return round(float(joint.logp), 5), track.names, list(tr.trace.nodes)

    assert run(mp) == run(pyro_ref)
