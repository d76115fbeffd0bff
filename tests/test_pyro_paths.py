"""Pyro's import paths of user-facing helpers, each compared with Pyro's own: shape helpers
(``distributions.util``), ``Empirical``, the fakes, the validation switch as a context manager,
``effectful``/``get_mask``/``get_plates`` (``poutine.runtime``), the handler class modules,
``poutine.util``, ``util``'s warning helpers and ``settings``."""

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import miniprob as mp
import miniprob.distributions as mdist
from miniprob import poutine

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

pyro = pytest.importorskip("pyro")
import pyro.distributions.util as putil  # noqa: E402

import miniprob.distributions.util as mutil  # noqa: E402

# ---- distributions.util -----------------------------------------------------------------------

shapes = st.lists(st.lists(st.integers(1, 3), max_size=3).map(tuple), min_size=1, max_size=3)


@settings(max_examples=40)
@given(shapes, st.booleans())
def test_broadcast_shape_is_pyros(shape_list, strict):
    try:
        expected = putil.broadcast_shape(*shape_list, strict=strict)
    except ValueError as e:
        with pytest.raises(ValueError, match="shape mismatch") as info:
            mutil.broadcast_shape(*shape_list, strict=strict)
        assert str(info.value) == str(e)
        return
    assert mutil.broadcast_shape(*shape_list, strict=strict) == expected


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -2, 3, float("inf")])
def test_sum_rightmost_and_leftmost_are_pyros(dim):
    x = torch.randn(2, 3, 4)
    for name in ("sum_rightmost", "sum_leftmost"):
        expected = getattr(putil, name)(x, dim)
        torch.testing.assert_close(getattr(mutil, name)(x, dim), expected, rtol=0, atol=0)
        assert getattr(mutil, name)(2.5, dim) == 2.5


def test_the_small_helpers_are_pyros():
    x = torch.randn(4, 3, dtype=torch.float64)
    index = torch.tensor([[2], [0], [1], [1]])
    torch.testing.assert_close(mutil.gather(x, index, -1), putil.gather(x, index, -1))
    for value in (0, 0.0, 1, 1.0, 2, torch.tensor(0), torch.tensor(1), torch.tensor(0.0)):
        assert mutil.is_identically_zero(value) == putil.is_identically_zero(value)
        assert mutil.is_identically_one(value) == putil.is_identically_one(value)
    s = mutil.scalar_like(x, 3)
    assert s.dtype == putil.scalar_like(x, 3).dtype == torch.float64 and s.item() == 3
    torch.testing.assert_close(mutil.eye_like(x, 3, 2), putil.eye_like(x, 3, 2))
    assert mutil.logsumexp is putil.logsumexp is torch.logsumexp
    mask = torch.tensor([True, False, True])
    for scale, m in [(1.0, None), (2.0, None), (0.5, mask), (2.0, True), (2.0, False)]:
        t = torch.randn(3)
        torch.testing.assert_close(
            mutil.scale_and_mask(t, scale, m), putil.scale_and_mask(t, scale, m)
        )
    assert mutil.scale_and_mask(0, 2.0, mask) == 0


# ---- Empirical and the fakes ------------------------------------------------------------------


@pytest.mark.parametrize("batch", [(), (2,)])
def test_empirical_is_pyros(batch):
    samples = torch.randn(*batch, 5, 3)
    log_weights = torch.randn(*batch, 5)
    theirs = pyro.distributions.Empirical(samples, log_weights)
    ours = mdist.Empirical(samples, log_weights)
    assert (ours.batch_shape, ours.event_shape) == (theirs.batch_shape, theirs.event_shape)
    assert ours.sample_size == theirs.sample_size
    torch.manual_seed(0)
    expected = theirs.sample((7,))
    torch.manual_seed(0)
    torch.testing.assert_close(ours.sample((7,)), expected, rtol=0, atol=0)
    value = expected[0]
    torch.testing.assert_close(ours.log_prob(value), theirs.log_prob(value))
    torch.testing.assert_close(ours.mean, theirs.mean)
    torch.testing.assert_close(ours.variance, theirs.variance)
    assert ours.enumerate_support() is samples
    with pytest.raises(ValueError, match="must match the leftmost shape"):
        mdist.Empirical(samples, torch.zeros(6))
    with pytest.raises(ValueError, match=r"``value.shape`` must be"):
        ours.log_prob(expected)


def test_the_fakes_take_the_score_function_path_as_pyros():
    import pyro.distributions.testing.fakes as pfakes

    from miniprob.distributions.testing import fakes

    for name in pfakes.__dict__:
        if name.startswith("Nonreparameterized"):
            cls = getattr(fakes, name)
            assert cls.has_rsample is False
            assert issubclass(cls, getattr(mdist, name.removeprefix("Nonreparameterized")))

    def model(lib, d):
        lib.sample("z", d.Normal(0.0, 1.0))

    def guide(lib, d):
        loc = lib.param("loc", torch.tensor(0.3))
        lib.sample("z", d.testing.fakes.NonreparameterizedNormal(loc, 1.0))

    grads = []
    for lib, d in ((pyro, pyro.distributions), (mp, mdist)):
        lib.clear_param_store()
        lib.set_rng_seed(0)
        lib.infer.Trace_ELBO().loss_and_grads(model, guide, lib, d)
        grads.append(lib.param("loc").unconstrained().grad)
    torch.testing.assert_close(grads[1], grads[0])


# ---- validation -------------------------------------------------------------------------------


def test_validation_enabled_is_a_context_manager_as_in_pyro():
    for lib in (pyro, mp):
        assert lib.distributions.is_validation_enabled()
        with lib.validation_enabled(False):
            assert not lib.poutine.util.is_validation_enabled()
            with lib.validation_enabled():
                assert lib.infer.is_validation_enabled()
            assert not lib.distributions.is_validation_enabled()
        assert lib.distributions.is_validation_enabled()
    # ... and still reads as miniprob's getter did.
    assert mp.validation_enabled() and mp.validation_enabled() == True  # noqa: E712
    mp.distributions.enable_validation(False)
    assert not mp.validation_enabled() and repr(mp.validation_enabled()) == "False"
    mp.enable_validation(True)


def test_an_error_inside_validation_enabled_restores_the_switch():
    with pytest.raises(ZeroDivisionError), mp.validation_enabled(False):
        _ = 1 / 0
    assert mp.validation_enabled()


# ---- poutine.runtime --------------------------------------------------------------------------


def lazy_program(lib):
    """The effect-handlers tutorial's lazy evaluation, written once against a library."""
    effectful = lib.poutine.runtime.effectful

    class LazyValue:
        def __init__(self, fn, *args):
            self.fn, self.args = fn, args

        def evaluate(self):
            fn = self.fn.evaluate() if isinstance(self.fn, LazyValue) else self.fn
            args = [a.evaluate() if isinstance(a, LazyValue) else a for a in self.args]
            return fn(*args)

    class LazyMessenger(lib.poutine.messenger.Messenger):
        def _process_message(self, msg):
            if msg["type"] in ("apply", "sample") and not msg["done"]:
                msg["done"] = True
                msg["value"] = LazyValue(msg["fn"], *msg["args"])

    add = effectful(type="apply")(lambda x, y: x + y)
    normal = effectful(lambda loc, scale: lib.distributions.Normal(loc, scale), type="apply")

    def model(guess):
        weight = lib.sample("weight", normal(guess, 1.0))
        return lib.sample("measurement", normal(add(weight, 1.0), 0.5))

    lib.set_rng_seed(0)
    with LazyMessenger():
        value = model(8.5)
    outside = add(1.0, 2.0)
    with lib.poutine.trace() as tracer:  # apply messages are not recorded
        add(torch.tensor(1.0), 2.0, name="a")
        model(1.0)
    return value.evaluate(), outside, list(tracer.trace.nodes)


def test_effectful_is_pyros():
    expected, actual = lazy_program(pyro), lazy_program(mp)
    torch.testing.assert_close(actual[0], expected[0], rtol=0, atol=0)
    assert actual[1:] == expected[1:] == (3.0, ["weight", "measurement"])
    with pytest.raises(ValueError, match="type="):
        mp.poutine.runtime.effectful(lambda: 1)


def test_get_mask_and_get_plates_are_pyros():
    def program(lib):
        seen = [lib.poutine.runtime.get_mask(), lib.poutine.runtime.get_plates()]
        with lib.plate("outer", 3), lib.poutine.mask(mask=torch.tensor([True, False, True])):
            with lib.plate("inner", 2, dim=-3), lib.poutine.scale(scale=2.0):
                seen += [lib.poutine.runtime.get_mask(), lib.poutine.runtime.get_plates()]
            with lib.poutine.block():
                seen += [lib.poutine.runtime.get_mask(), lib.poutine.runtime.get_plates()]
            with lib.poutine.trace() as tracer:
                lib.poutine.runtime.get_plates()
        return seen, list(tracer.trace.nodes)

    (expected, exp_nodes), (actual, act_nodes) = program(pyro), program(mp)
    assert act_nodes == exp_nodes == []
    for ours, theirs in zip(actual, expected, strict=True):
        if isinstance(theirs, tuple):
            assert [(f.name, f.dim, f.size) for f in ours] == [
                (f.name, f.dim, f.size) for f in theirs
            ]
        elif isinstance(theirs, torch.Tensor):
            assert torch.equal(ours, theirs)
        else:
            assert ours is theirs


# ---- module paths -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module, name, target",
    [
        ("trace_messenger", "TraceMessenger", "trace"),
        ("condition_messenger", "ConditionMessenger", "condition"),
        ("block_messenger", "BlockMessenger", "block"),
        ("replay_messenger", "ReplayMessenger", "replay"),
        ("scale_messenger", "ScaleMessenger", "scale"),
        ("mask_messenger", "MaskMessenger", "mask"),
        ("seed_messenger", "SeedMessenger", "seed"),
        ("substitute_messenger", "SubstituteMessenger", "substitute"),
        ("plate_messenger", "PlateMessenger", "plate"),
        ("messenger", "Messenger", "Messenger"),
        ("util", "prune_subsample_sites", "prune_subsample_sites"),
        ("runtime", "apply_stack", "apply_stack"),
    ],
)
def test_handler_modules_are_pyros_paths_to_one_object(module, name, target):
    ours = getattr(getattr(poutine, module), name)
    assert ours is getattr(poutine, target)
    assert hasattr(getattr(pyro.poutine, module), name)


def test_the_tutorials_trace_and_condition_messengers():
    """The effect-handlers tutorial's scale model, with Pyro's handler classes by their paths."""

    def run(lib):
        from_trace = lib.poutine.trace_messenger.TraceMessenger
        from_condition = lib.poutine.condition_messenger.ConditionMessenger

        def scale(guess):
            weight = lib.sample("weight", lib.distributions.Normal(guess, 1.0))
            return lib.sample("measurement", lib.distributions.Normal(weight, 0.75))

        lib.set_rng_seed(0)
        with from_trace() as tracer, from_condition(data={"measurement": torch.tensor(9.5)}):
            scale(8.5)
        tr = tracer.trace
        return (
            tr.nodes["measurement"]["is_observed"],
            tr.nodes["weight"]["value"],
            tr.log_prob_sum(),
        )

    expected, actual = run(pyro), run(mp)
    assert actual[0] is expected[0] is True
    torch.testing.assert_close(actual[1:], expected[1:], rtol=0, atol=0)


def test_poutine_util_finds_subsample_sites_as_pyros():
    def model(lib):
        with lib.plate("data", 10, subsample_size=3):
            lib.sample("x", lib.distributions.Normal(0.0, 1.0))
        with lib.plate("full", 2):
            lib.sample("y", lib.distributions.Normal(0.0, 1.0))

    trs = [lib.poutine.trace(model).get_trace(lib) for lib in (pyro, mp)]
    for util, tr in zip((pyro.poutine.util, poutine.util), trs, strict=True):
        assert [n for n, s in tr.nodes.items() if util.site_is_subsample(s)] == ["data", "full"]
        assert list(util.prune_subsample_sites(tr).nodes) == ["_INPUT", "x", "y", "_RETURN"]


# ---- util -------------------------------------------------------------------------------------


def test_warn_if_nan_and_inf_are_pyros():
    import pyro.util as pu

    import miniprob.util as mu

    for util in (pu, mu):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x = torch.tensor([1.0, float("nan")], requires_grad=True)
            assert util.warn_if_nan(x, "x") is x
            x.sum().backward()
            util.warn_if_inf(torch.tensor(float("-inf")), "y", allow_neginf=True)
            util.warn_if_inf(torch.tensor(float("inf")), "z")
            util.warn_if_nan(1.0)
        assert [str(w.message) for w in caught] == ["Encountered NaN: x", "Encountered +inf: z"]
        assert caught[0].filename == __file__


def test_warning_filters_are_pyros():
    import miniprob.util as mu

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with mu.ignore_experimental_warning():
            warnings.warn("x", mu.ExperimentalWarning, stacklevel=1)
        warnings.warn("y", mu.ExperimentalWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["y"]

    def f(x):
        with mu.ignore_jit_warnings():
            return x * len(x.tolist())

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.jit.trace(f, torch.ones(2))
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    assert mp.util.set_rng_seed is mp.set_rng_seed


# ---- settings ---------------------------------------------------------------------------------


def test_settings_interface_is_pyros():
    assert set(mp.settings.get()) >= {"validate_poutine", "validate_distributions_torch"}
    with mp.settings.context(validate_distributions_pyro=False):
        assert not mp.validation_enabled()
        assert pyro.settings.get("validate_poutine")  # Pyro's own switch is untouched
    assert mp.validation_enabled()

    @mp.settings.context(validate_infer=False)
    def checks():
        return mp.settings.get("validate_infer")

    assert checks() is False and mp.settings.get("validate_infer") is True
    with pytest.raises(TypeError, match="expected a bool"):
        mp.settings.set(validate_poutine="yes")
    with pytest.raises(KeyError, match="no setting named 'nope'"):
        mp.settings.get("nope")


# ---- errors: Pyro's exception types and wording -----------------------------------------------


def duplicate_sample(lib):
    lib.sample("x", lib.distributions.Normal(0.0, 1.0))
    lib.sample("x", lib.distributions.Normal(0.0, 1.0))


def sample_after_param(lib):
    lib.param("x", torch.zeros(1))
    lib.sample("x", lib.distributions.Normal(0.0, 1.0))


def plate_shape_mismatch(lib):
    with lib.plate("data", 3):
        lib.sample("x", lib.distributions.Normal(torch.zeros(4), 1.0))


def param_shape_in_plate(lib):
    with lib.plate("data", 10, subsample_size=3):
        lib.param("p", torch.zeros(7, 2), event_dim=1)


def two_plates_one_dim(lib):
    with lib.plate("a", 3, dim=-1), lib.plate("b", 4, dim=-1):
        pass


def duplicate_plate(lib):
    with lib.plate("p", 2), lib.plate("p", 2):
        pass


def plate_of_size_zero(lib):
    with lib.plate("foo", 0):
        pass


def plate_with_positive_dim(lib):
    with lib.plate("q", 2, dim=0):
        pass


def block_hide_and_expose(lib):
    lib.poutine.block(lambda: None, hide=["x"], expose=["x"])()


@pytest.mark.parametrize(
    "program",
    [
        duplicate_sample,
        sample_after_param,
        plate_shape_mismatch,
        param_shape_in_plate,
        two_plates_one_dim,
        duplicate_plate,
        plate_of_size_zero,
        plate_with_positive_dim,
        block_hide_and_expose,
    ],
)
def test_errors_have_pyros_type_and_words(program):
    """miniprob's error is an instance of Pyro's exception type and carries Pyro's message (its
    first line; Pyro's trace handler appends a shape table), then says more."""
    errors = []
    for lib in (pyro, mp):
        lib.clear_param_store()
        with pytest.raises(Exception) as info:
            lib.poutine.trace(program).get_trace(lib)
        errors.append(info.value)
    theirs, ours = errors
    assert isinstance(ours, type(theirs)), (type(ours), type(theirs))
    pyro_words = str(theirs).split("\n")[0]
    assert pyro_words in str(ours)
    assert len(str(ours)) > len(pyro_words) or not pyro_words


def test_an_observation_outside_the_support_is_reported_when_scored_as_in_pyro():
    def model(lib, v):
        lib.sample("test_site", lib.distributions.Beta(1.0, 1.0), obs=v)

    for lib in (pyro, mp):
        for method, words in [
            ("compute_log_prob", "log_prob"),
            ("log_prob_sum", "log_prob_sum"),
            ("compute_score_parts", "score_parts"),
        ]:
            tr = lib.poutine.trace(model).get_trace(lib, torch.tensor(2.0))  # recorded
            with pytest.raises(
                ValueError, match=f"Error while computing {words} at site 'test_site':"
            ):
                getattr(tr, method)()
    with pytest.raises(ValueError, match="'test_site'.*support"):
        model(mp, torch.tensor(2.0))  # outside any handler, nothing will score it: checked now


def test_trace_elbo_warns_about_enumeration_and_refuses_baselines_with_a_reason():
    def model(lib, infer):
        lib.sample("a", lib.distributions.Bernoulli(0.5))

    def guide(lib, infer):
        lib.sample("a", lib.distributions.Bernoulli(0.5), infer=infer)

    for lib in (pyro, mp):
        with pytest.warns(UserWarning, match="you need to use TraceEnum_ELBO instead"):
            lib.infer.Trace_ELBO().loss(model, guide, lib, {"enumerate": "parallel"})
    for elbo in (mp.infer.Trace_ELBO(), mp.infer.TraceMeanField_ELBO()):
        with pytest.raises(ValueError, match="guide site 'a'.*no baselines.*TraceGraph_ELBO"):
            elbo.loss(model, guide, mp, {"baseline": {"use_decaying_avg_baseline": True}})
    with mp.validation_enabled(False):
        mp.infer.Trace_ELBO().loss(model, guide, mp, {"baseline": {}})  # validation off: as Pyro


def test_guide_checks_are_pyros():
    def model(lib):
        lib.sample("x", lib.distributions.Bernoulli(0.5))

    def guide_with_plate(lib):
        p = lib.param(
            "p", torch.tensor(0.5), constraint=lib.distributions.constraints.unit_interval
        )
        for _ in lib.plate("plate", 3):
            pass
        lib.sample("x", lib.distributions.Bernoulli(p))

    def guide_with_factor(lib):
        lib.sample("x", lib.distributions.Bernoulli(0.5))
        lib.factor("f", torch.tensor(0.0))

    for lib in (pyro, mp):
        lib.clear_param_store()
        with pytest.warns(UserWarning, match="Found plate statements in guide but not model"):
            lib.infer.Trace_ELBO().loss(model, guide_with_plate, lib)
        with pytest.raises(ValueError, match='pyro.factor\\("f",...\\), missing specification'):
            lib.infer.Trace_ELBO().loss(model, guide_with_factor, lib)
