"""Optimizers: per-parameter semantics (each parameter behaves as if it had its own torch
optimizer), per-parameter clipping, state by name, argument checks, ClippedAdam, schedulers,
multi-optimizers."""

import pytest
import torch

import miniprob as pyro
from miniprob.distributions import constraints
from miniprob.optim import (
    SGD,
    Adam,
    ClippedAdam,
    ExponentialLR,
    MixedMultiOptimizer,
    PyroMultiOptimizer,
    PyroOptim,
    ReduceLROnPlateau,
    RMSprop,
    StepLR,
    TorchMultiOptimizer,
)
from miniprob.optim.clipped_adam import ClippedAdam as TorchClippedAdam

GRADS = [
    {"a": [1.0, -2.0], "b": [0.5], "c": [3.0, 0.0, -1.0]},
    {"a": [0.2, 0.1], "b": [-4.0], "c": [1.0, 1.0, 1.0]},
    {"a": [-3.0, 2.0], "b": [0.0], "c": [0.5, -0.5, 2.0]},
]
INIT = {"a": [0.5, -0.5], "b": [2.0], "c": [0.0, 1.0, 2.0]}


def make_params(names=INIT):
    return {name: pyro.param(name, torch.tensor(INIT[name])) for name in names}


def apply(optim, grads, names=None):
    """Set the given gradients on the named params' leaves and call the optimizer."""
    leaves = []
    for name, grad in grads.items():
        if names is not None and name not in names:
            continue
        leaf = pyro.get_param_store().unconstrained(name)
        leaf.grad = torch.tensor(grad)
        leaves.append(leaf)
    optim(leaves)
    for leaf in leaves:
        leaf.grad = None


def reference(constructor, args, grads, clip=None, names=None):
    """The oracle: one torch optimizer per parameter, each clipped on its own."""
    leaves = {n: torch.tensor(v, requires_grad=True) for n, v in INIT.items()}
    optims = {n: constructor([leaf], **args(n)) for n, leaf in leaves.items()}
    for step in grads:
        for name, grad in step.items():
            if names is not None and name not in names:
                continue
            leaf = leaves[name]
            leaf.grad = torch.tensor(grad)
            if clip and "clip_norm" in clip:
                torch.nn.utils.clip_grad_norm_(leaf, clip["clip_norm"])
            if clip and "clip_value" in clip:
                torch.nn.utils.clip_grad_value_(leaf, clip["clip_value"])
            optims[name].step()
    return {n: leaf.detach() for n, leaf in leaves.items()}


def store_values():
    return {n: v.detach().clone() for n, v in pyro.get_param_store().items()}


@pytest.mark.parametrize(
    "constructor, args",
    [
        (torch.optim.Adam, lambda n: {"lr": 0.1}),
        (torch.optim.SGD, lambda n: {"lr": 0.1, "momentum": 0.5}),
        (torch.optim.RMSprop, lambda n: {"lr": 0.01}),
        (torch.optim.Adagrad, lambda n: {"lr": 0.1}),
        (torch.optim.AdamW, lambda n: {"lr": 0.1, "weight_decay": 0.5}),
        (torch.optim.Adam, lambda n: {"lr": {"a": 0.1, "b": 0.01, "c": 0.1}[n]}),
        (torch.optim.SGD, lambda n: {"lr": 0.1, "momentum": 0.9 if n == "c" else 0.0}),
        (TorchClippedAdam, lambda n: {"lr": 0.2, "clip_norm": 1.5, "lrd": 0.8}),
    ],
    ids=[
        "adam",
        "sgd",
        "rmsprop",
        "adagrad",
        "adamw",
        "per_param_lr",
        "per_param_momentum",
        "clipped_adam",
    ],
)
def test_updates_equal_one_torch_optimizer_per_parameter(constructor, args):
    make_params()
    optim = PyroOptim(constructor, args)
    for step in GRADS:
        apply(optim, step)
    expected = reference(constructor, args, GRADS)
    for name, value in store_values().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-7)


def test_parameters_sharing_hyperparameters_share_one_torch_optimizer():
    make_params()
    shared = Adam({"lr": 0.1})
    apply(shared, GRADS[0])
    assert len(shared.optimizers()) == 1
    split = Adam(lambda name: {"lr": 0.1 if name == "a" else 0.2})
    apply(split, GRADS[0])
    assert len(split.optimizers()) == 2


@pytest.mark.parametrize(
    "clip", [{"clip_norm": 1.0}, {"clip_value": 0.5}, {"clip_norm": 2.0, "clip_value": 0.7}]
)
def test_clipping_is_per_parameter(clip):
    """Each parameter's gradient is clipped on its own (a joint norm would shrink them all)."""
    make_params()
    optim = SGD({"lr": 1.0}, clip_args=clip)
    for step in GRADS:
        apply(optim, step)
    expected = reference(torch.optim.SGD, lambda n: {"lr": 1.0}, GRADS, clip=clip)
    for name, value in store_values().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "clip_args",
    [
        lambda name: {"clip_value": 0.5} if name == "a" else {"clip_norm": 1.0},
        lambda module, name: (
            {"clip_value": 0.5} if (module, name) == ("a", "a") else {"clip_norm": 1.0}
        ),
    ],
    ids=["one_arg", "module_and_name"],
)
def test_clip_args_may_be_a_callable_per_parameter(clip_args):
    make_params()
    optim = SGD({"lr": 1.0}, clip_args=clip_args)
    before = {n: pyro.param(n).detach().clone() for n in INIT}
    apply(optim, GRADS[0])
    moved = {n: before[n] - pyro.param(n).detach() for n in INIT}
    torch.testing.assert_close(moved["a"], torch.tensor([0.5, -0.5]))  # clamped to +-0.5
    torch.testing.assert_close(moved["b"], torch.tensor([0.5]))  # norm 0.5 < 1: unchanged
    c = torch.tensor(GRADS[0]["c"])
    torch.testing.assert_close(moved["c"], c / c.norm(), atol=1e-6, rtol=1e-6)


def test_a_callable_clip_args_is_checked_per_parameter():
    make_params(["a"])
    optim = Adam({"lr": 0.1}, clip_args=lambda name: {"clip_nrom": 1.0})
    with pytest.raises(ValueError, match=r"clip_args\('a'\).*clip_nrom"):
        apply(optim, {"a": [1.0, 1.0]})
    assert optim.optimizers() == []  # nothing registered by the failed call
    optim = Adam({"lr": 0.1}, clip_args=lambda name: None)
    with pytest.raises(TypeError, match=r"clip_args\('a'\) must be a dict"):
        apply(optim, {"a": [1.0, 1.0]})


def test_clip_norm_scales_the_gradient_to_the_norm():
    make_params(["a"])
    optim = SGD({"lr": 1.0}, clip_args={"clip_norm": 1.0})
    pyro.get_param_store().unconstrained("a").grad = torch.tensor([3.0, 4.0])
    optim([pyro.get_param_store().unconstrained("a")])
    torch.testing.assert_close(pyro.param("a"), torch.tensor([0.5 - 0.6, -0.5 - 0.8]))


def test_parameters_without_gradients_are_not_updated():
    make_params()
    optim = Adam({"lr": 0.1})
    apply(optim, GRADS[0])
    before = store_values()
    leaves = [pyro.get_param_store().unconstrained(n) for n in ("a", "b")]
    leaves[0].grad = torch.tensor([1.0, 1.0])
    optim(leaves)
    after = store_values()
    assert not torch.equal(after["a"], before["a"])
    assert torch.equal(after["b"], before["b"]) and torch.equal(after["c"], before["c"])


def test_new_parameters_are_picked_up_as_they_appear():
    """``c`` appears at the second step: its optimizer starts then, with its own args."""
    make_params(["a", "b"])
    seen = []

    def args(name):
        seen.append(name)
        return {"lr": 0.05 if name == "c" else 0.1}

    optim = Adam(args)
    apply(optim, GRADS[0], names={"a", "b"})
    make_params(["c"])
    for step in GRADS[1:]:
        apply(optim, step)
    assert seen == ["a", "b", "c"]
    expected_ab = reference(torch.optim.Adam, args, GRADS, names={"a", "b"})
    expected_c = reference(torch.optim.Adam, args, GRADS[1:], names={"c"})
    values = store_values()
    torch.testing.assert_close(values["a"], expected_ab["a"], rtol=0, atol=1e-7)
    torch.testing.assert_close(values["b"], expected_ab["b"], rtol=0, atol=1e-7)
    torch.testing.assert_close(values["c"], expected_c["c"], rtol=0, atol=1e-7)


def test_a_reset_parameter_restarts_its_optimizer_state():
    """A parameter re-created under the same name (a new leaf) starts with fresh Adam moments."""
    make_params(["a"])
    optim = Adam({"lr": 0.1})
    for step in GRADS:
        apply(optim, step, names={"a"})
    pyro.get_param_store()["a"] = torch.tensor(INIT["a"])
    apply(optim, GRADS[0], names={"a"})
    expected = reference(torch.optim.Adam, lambda n: {"lr": 0.1}, GRADS[:1], names={"a"})
    torch.testing.assert_close(pyro.param("a"), expected["a"], rtol=0, atol=1e-7)


def test_constrained_parameters_are_updated_through_their_unconstrained_leaf():
    scale = pyro.param("scale", torch.tensor(2.0), constraint=constraints.positive)
    leaf = scale.unconstrained()
    optim = SGD({"lr": 0.1})
    loss = (scale - 1.0) ** 2
    loss.backward()
    grad = leaf.grad.clone()
    optim([leaf])
    torch.testing.assert_close(
        pyro.param("scale"), torch.exp(torch.log(torch.tensor(2.0)) - 0.1 * grad)
    )


# ---- arguments ---------------------------------------------------------------------------


def test_unknown_optim_args_key_is_an_error_naming_it():
    with pytest.raises(ValueError, match="lrr"):
        Adam({"lrr": 0.1})
    optim = Adam(lambda name: {"lr": 0.1, "momentum": 0.9})
    make_params(["a"])
    with pytest.raises(ValueError, match="momentum"):
        apply(optim, GRADS[0], names={"a"})


def test_bad_clip_args_are_errors():
    with pytest.raises(ValueError, match="clip_nrm"):
        Adam({"lr": 0.1}, clip_args={"clip_nrm": 1.0})
    with pytest.raises(ValueError, match="clip_norm"):
        Adam({"lr": 0.1}, clip_args={"clip_norm": -1.0})


def test_optim_args_must_be_a_dict_or_callable():
    with pytest.raises(TypeError, match="optim_args"):
        Adam([("lr", 0.1)])
    optim = Adam(lambda name: 0.1)
    make_params(["a"])
    with pytest.raises(TypeError, match="'a'"):
        apply(optim, GRADS[0], names={"a"})


# ---- state -------------------------------------------------------------------------------


def test_get_state_is_keyed_by_parameter_name_in_torch_format():
    make_params()
    optim = Adam({"lr": 0.1})
    apply(optim, GRADS[0])
    state = optim.get_state()
    assert sorted(state) == ["a", "b", "c"]
    for name, per in state.items():
        assert per["param_groups"][0]["lr"] == 0.1 and per["param_groups"][0]["params"] == [0]
        assert sorted(per["state"][0]) == ["exp_avg", "exp_avg_sq", "step"]
        assert per["state"][0]["exp_avg"].shape == torch.Size([len(INIT[name])])


@pytest.mark.parametrize("target", ["new", "same"])
def test_set_state_round_trips_by_name(target):
    """Continuing after get_state/set_state equals continuing without the round trip."""
    make_params()
    optim = Adam({"lr": 0.1, "betas": (0.5, 0.9)})
    apply(optim, GRADS[0])
    state = optim.get_state()
    values = store_values()
    for step in GRADS[1:]:
        apply(optim, step)
    expected = store_values()

    for name, value in values.items():
        pyro.get_param_store()[name] = value
    if target == "new":
        optim = Adam({"lr": 0.1, "betas": (0.5, 0.9)})
    optim.set_state(state)
    for step in GRADS[1:]:
        apply(optim, step)
    for name, value in store_values().items():
        assert torch.equal(value, expected[name]), name


def test_set_state_on_live_parameters_takes_effect_at_once():
    make_params()
    optim = Adam({"lr": 0.1})
    apply(optim, GRADS[0])
    state = optim.get_state()
    apply(optim, GRADS[1])
    optim.set_state(state)
    got = optim.get_state()
    for name in state:
        for key, value in state[name]["state"][0].items():
            assert torch.equal(got[name]["state"][0][key], value), (name, key)


def test_state_of_a_parameter_not_seen_yet_waits_for_it():
    optim = Adam({"lr": 0.1})
    state = {"z": {"state": {}, "param_groups": [{"lr": 0.3, "params": [0]}]}}
    optim.set_state(state)
    assert optim.get_state() == state
    pyro.param("z", torch.tensor(1.0))
    pyro.get_param_store().unconstrained("z").grad = torch.tensor(1.0)
    optim([pyro.get_param_store().unconstrained("z")])
    assert optim.get_state()["z"]["param_groups"][0]["lr"] == 0.3


def test_save_and_load_through_files(tmp_path):
    make_params()
    optim = RMSprop({"lr": 0.01})
    apply(optim, GRADS[0])
    optim.save(tmp_path / "optim.pt")
    other = RMSprop({"lr": 0.01})
    other.load(tmp_path / "optim.pt")
    assert sorted(other.get_state()) == ["a", "b", "c"]
    for name, per in optim.get_state().items():
        for key, value in per["state"][0].items():
            assert torch.equal(other.get_state()[name]["state"][0][key], value)


# ---- ClippedAdam -------------------------------------------------------------------------


def test_clipped_adam_clamps_gradients_and_decays_the_learning_rate_per_update():
    p = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = TorchClippedAdam([p], lr=0.1, clip_norm=1.0, lrd=0.5, eps=0.0)
    expected = p.detach().clone()
    for k in range(1, 4):
        p.grad = torch.tensor([100.0, -0.25])
        opt.step()
        # with a constant gradient Adam moves by lr_k * sign(g); lr_k = lr * lrd**k
        expected -= 0.1 * 0.5**k * torch.tensor([1.0, -1.0])
    torch.testing.assert_close(p.detach(), expected)


def test_clipped_adam_decays_each_parameter_from_its_first_update():
    """A parameter that appears later starts at the undecayed rate, as with Pyro's one
    optimizer per parameter."""
    make_params(["a"])
    optim = ClippedAdam({"lr": 0.1, "lrd": 0.5, "eps": 0.0})
    for step in GRADS:
        apply(optim, step, names={"a"})
    make_params(["b"])
    apply(optim, {"b": [3.0]})
    torch.testing.assert_close(pyro.param("b"), torch.tensor([2.0 - 0.05]))


def test_clipped_adam_centered_variance_equals_pyros(pyro_ref):
    torch.manual_seed(0)
    ours = torch.randn(5, requires_grad=True)
    theirs = ours.detach().clone().requires_grad_()
    kw = {"lr": 0.1, "clip_norm": 1.5, "lrd": 0.99, "centered_variance": True}
    opt_ours = TorchClippedAdam([ours], **kw)
    opt_theirs = pyro_ref.optim.clipped_adam.ClippedAdam([theirs], **kw)
    for _ in range(50):
        g = 2 * torch.randn(5)
        ours.grad, theirs.grad = g.clone(), g.clone()
        opt_ours.step()
        opt_theirs.step()
    assert torch.equal(ours, theirs)


def test_centered_variance_changes_the_step():
    """With a constant gradient the centered variance decays to zero: the step grows past
    plain Adam's (which stays near lr)."""
    steps = {}
    for centered in (False, True):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = TorchClippedAdam([p], lr=0.1, centered_variance=centered)
        for _ in range(30):
            p.grad = torch.ones(1)
            opt.step()
        before = p.item()
        p.grad = torch.ones(1)
        opt.step()
        steps[centered] = before - p.item()
    assert steps[False] == pytest.approx(0.1, rel=0.05)
    assert steps[True] > 2 * steps[False]


def test_clipped_adam_needs_a_positive_clip_norm():
    with pytest.raises(ValueError, match="clip_norm"):
        TorchClippedAdam([torch.nn.Parameter(torch.zeros(1))], clip_norm=0.0)


# ---- schedulers --------------------------------------------------------------------------


def test_exponential_lr_decays_every_optimizer():
    make_params()
    sched = ExponentialLR(
        {
            "optimizer": torch.optim.SGD,
            "optim_args": lambda n: {"lr": 1.0 if n == "a" else 0.5},
            "gamma": 0.5,
        }
    )
    apply(sched, GRADS[0])
    for _ in range(3):
        sched.step()
    assert sorted(o.param_groups[0]["lr"] for o in sched.optimizers()) == [0.0625, 0.125]


def test_step_lr_and_reduce_on_plateau():
    make_params(["a"])
    step_lr = StepLR(
        {"optimizer": torch.optim.SGD, "optim_args": {"lr": 1.0}, "step_size": 2, "gamma": 0.1}
    )
    apply(step_lr, GRADS[0], names={"a"})
    lrs = []
    for _ in range(4):
        step_lr.step()
        lrs.append(step_lr.optimizers()[0].param_groups[0]["lr"])
    assert lrs == pytest.approx([1.0, 0.1, 0.1, 0.01])
    plateau = ReduceLROnPlateau(
        {"optimizer": torch.optim.SGD, "optim_args": {"lr": 1.0}, "patience": 0, "factor": 0.5}
    )
    apply(plateau, GRADS[0], names={"a"})
    for loss in (3.0, 2.0, 2.5, 2.6):
        plateau.step(loss)
    assert plateau.optimizers()[0].param_groups[0]["lr"] == pytest.approx(0.25)


def test_scheduler_needs_optimizer_and_optim_args():
    with pytest.raises(ValueError, match="optim_args"):
        ExponentialLR({"optimizer": torch.optim.SGD, "gamma": 0.5})
    with pytest.raises(ValueError, match="optimizer"):
        ExponentialLR({"optim_args": {"lr": 0.1}, "gamma": 0.5})


# ---- multi-optimizers --------------------------------------------------------------------


def test_mixed_multi_optimizer_updates_constrained_parameters():
    """Each part steps its own parameters, through the unconstrained leaves, with gradients of
    the loss taken once, before any update."""
    a = pyro.param("a", torch.tensor(1.0))
    b = pyro.param("b", torch.tensor(2.0), constraint=constraints.positive)
    optim = MixedMultiOptimizer([(["a"], Adam({"lr": 0.1})), (["b"], SGD({"lr": 0.1}))])
    loss = (a - 3) ** 2 + (b - 0.5) ** 2 + a * b
    ga, gb = torch.autograd.grad(loss, [a, b.unconstrained()], retain_graph=True)
    optim.step(loss, {"a": a, "b": b})
    torch.testing.assert_close(pyro.param("a"), torch.tensor(1.0) - 0.1 * torch.sign(ga))
    torch.testing.assert_close(pyro.param("b"), torch.exp(torch.log(torch.tensor(2.0)) - 0.1 * gb))
    for _ in range(3):
        a, b = pyro.param("a"), pyro.param("b")
        optim.step((a - 3) ** 2 + (b - 0.5) ** 2 + a * b, {"a": a, "b": b})
    assert pyro.param("b").item() > 0


def test_pyros_mixed_multi_optimizer_fails_on_constrained_parameters(pyro_ref):
    """What the test above guards: Pyro's version cannot step a constrained value."""
    from pyro.optim import SGD as PyroSGD
    from pyro.optim import Adam as PyroAdam
    from pyro.optim.multi import MixedMultiOptimizer as PyroMixed

    a = pyro_ref.param("a", torch.tensor(1.0))
    b = pyro_ref.param("b", torch.tensor(2.0), constraint=constraints.positive)
    optim = PyroMixed([(["a"], PyroAdam({"lr": 0.1})), (["b"], PyroSGD({"lr": 0.1}))])
    with pytest.raises(ValueError, match="non-leaf"):
        optim.step((a - 3) ** 2 + (b - 0.5) ** 2, {"a": a, "b": b})


def test_mixed_multi_optimizer_rejects_a_parameter_claimed_twice():
    with pytest.raises(ValueError, match="'a'"):
        MixedMultiOptimizer([(["a", "b"], Adam({"lr": 0.1})), (["c", "a"], SGD({"lr": 0.1}))])


def test_mixed_multi_optimizer_checks_the_names_it_is_given():
    a, b = pyro.param("a", torch.tensor(1.0)), pyro.param("b", torch.tensor(1.0))
    optim = MixedMultiOptimizer([(["a"], Adam({"lr": 0.1}))])
    with pytest.raises(ValueError, match="'b'"):
        optim.step(a + b, {"a": a, "b": b})
    optim = MixedMultiOptimizer([(["a", "b"], Adam({"lr": 0.1}))])
    with pytest.raises(ValueError, match="'b'"):
        optim.step(a * 2, {"a": a})
    with pytest.raises(TypeError, match="part 0"):
        MixedMultiOptimizer([(["a"], torch.optim.Adam)])


def test_pyro_and_torch_multi_optimizers_equal_pyro_optim():
    make_params()
    names = ["a", "b", "c"]
    results = []
    for make in (
        lambda: PyroMultiOptimizer(Adam({"lr": 0.1})),
        lambda: TorchMultiOptimizer(torch.optim.Adam, {"lr": 0.1}),
    ):
        for name in names:
            pyro.get_param_store()[name] = torch.tensor(INIT[name])
        optim = make()
        for step in GRADS:
            params = {n: pyro.param(n) for n in names}
            loss = sum((params[n] * torch.tensor(step[n])).sum() for n in names)
            optim.step(loss, params)
        results.append(store_values())
    expected = reference(torch.optim.Adam, lambda n: {"lr": 0.1}, GRADS)
    for values in results:
        for name, value in values.items():
            torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-7)


# ---- loading state: per parameter, as with Pyro's optimizer per parameter --------------------


def _step(optim, names, grad=1.0):
    leaves = [pyro.get_param_store().unconstrained(n) for n in names]
    for leaf in leaves:
        leaf.grad = torch.full_like(leaf, grad)
    optim(leaves)
    for leaf in leaves:
        leaf.grad = None


def _run_both(pyro_ref, run):
    expected = run(pyro_ref)
    pyro.clear_param_store()
    return expected, run(pyro)


def test_loaded_hyperparameters_stay_with_their_parameter(pyro_ref):
    def run(lib):
        lib.clear_param_store()
        lib.param("a", torch.tensor(1.0))
        old = lib.optim.Adam({"lr": 0.1})
        leaf = lib.get_param_store()["a"].unconstrained()
        leaf.grad = torch.tensor(1.0)
        old([leaf])
        leaf.grad = None
        new = lib.optim.Adam({"lr": 0.01})
        new.set_state(old.get_state())
        lib.param("b", torch.tensor(1.0))
        leaves = [lib.get_param_store()[n].unconstrained() for n in ("b", "a")]
        for leaf in leaves:
            leaf.grad = torch.tensor(1.0)
        new(leaves)
        lrs = {n: s["param_groups"][0]["lr"] for n, s in new.get_state().items()}
        return lrs, {n: lib.get_param_store()[n].item() for n in ("a", "b")}

    expected, actual = _run_both(pyro_ref, run)
    assert actual == expected
    assert actual[0] == {"a": 0.1, "b": 0.01}


def test_loaded_state_is_cast_to_the_parameter_and_old_formats_are_upgraded():
    optim = Adam({"lr": 0.1})
    pyro.param("a", torch.tensor([1.0]))
    _step(optim, ["a"])
    saved = optim.get_state()
    pyro.clear_param_store()
    pyro.param("a", torch.tensor([1.0], dtype=torch.float64))
    resumed = Adam({"lr": 0.1})
    resumed.set_state(saved)
    _step(resumed, ["a"])
    state = resumed.get_state()["a"]["state"][0]
    assert state["exp_avg"].dtype == torch.float64 and state["step"].item() == 2
    assert saved["a"]["state"][0]["step"].item() == 1  # the caller's dict is not updated
    # A step count saved as a number (older torch) becomes a tensor, as torch's loading does.
    saved["a"]["state"][0]["step"] = 3
    again = Adam({"lr": 0.1})
    again.set_state(saved)
    _step(again, ["a"])
    assert again.get_state()["a"]["state"][0]["step"].item() == 4


def test_an_empty_saved_state_resets_a_live_parameter():
    optim = Adam({"lr": 0.1})
    pyro.param("a", torch.tensor(1.0))
    optim([pyro.get_param_store().unconstrained("a")])  # registered, no gradient yet
    snapshot = optim.get_state()
    _step(optim, ["a"])
    optim.set_state(snapshot)
    assert optim.get_state()["a"]["state"] == {}


def test_get_state_right_after_set_state_gives_what_was_set():
    optim = Adam({"lr": 0.1})
    pyro.param("a", torch.tensor(1.0))
    _step(optim, ["a"])
    saved = optim.get_state()
    _step(optim, ["a"])
    pyro.get_param_store()["a"] = torch.tensor(1.0)  # a new leaf under the old name
    optim.set_state(saved)
    assert optim.get_state()["a"]["state"][0]["step"].item() == 1


def test_a_failed_step_keeps_the_restored_state_for_the_next_one():
    optim = Adam({"lr": 0.1})
    pyro.param("a", torch.tensor(1.0))
    for _ in range(3):
        _step(optim, ["a"])
    saved = optim.get_state()
    pyro.clear_param_store()
    calls = []

    def clip(name):
        calls.append(name)
        if len(calls) == 2:
            raise RuntimeError("transient")
        return {}

    resumed = Adam({"lr": 0.1}, clip_args=clip)
    resumed.set_state(saved)
    pyro.param("a", torch.tensor(1.0))
    pyro.param("b", torch.tensor(1.0))
    with pytest.raises(RuntimeError, match="transient"):
        _step(resumed, ["a", "b"])
    resumed._forget(pyro.get_param_store().unconstrained("a"))  # what SVI's undo does
    assert "a" in resumed._pending
    _step(resumed, ["a"])
    assert resumed.get_state()["a"]["state"][0]["step"].item() == 4


def test_the_torch_constructors_errors_name_the_parameter():
    pyro.param("b", torch.tensor(1.0))
    optim = Adam(lambda name: {"lr": -0.1 if name == "b" else 0.1})
    with pytest.raises(ValueError, match="param 'b'.*learning rate"):
        _step(optim, ["b"])
    assert optim.optimizers() == []


def test_optimizer_classes_from_elsewhere_get_one_instance_per_parameter(pyro_ref):
    """Pyro's own ClippedAdam decays its group's rate in ``step``: it cannot be shared."""

    def run(lib):
        lib.clear_param_store()
        optim = lib.optim.PyroOptim(
            pyro_ref.optim.clipped_adam.ClippedAdam, {"lr": 0.1, "lrd": 0.5}
        )
        lib.param("a", torch.tensor(1.0))
        for step in range(4):
            if step == 2:
                lib.param("b", torch.tensor(1.0))
            names = ["a", "b"] if step >= 2 else ["a"]
            leaves = [lib.get_param_store()[n].unconstrained() for n in names]
            for leaf in leaves:
                leaf.grad = torch.tensor(1.0)
            optim(leaves)
            for leaf in leaves:
                leaf.grad = None
        return {n: lib.get_param_store()[n].item() for n in ("a", "b")}

    expected, actual = _run_both(pyro_ref, run)
    assert actual == expected


# ---- schedulers: a new leaf starts its own schedule ----------------------------------------


def _sched():
    return ExponentialLR({"optimizer": torch.optim.SGD, "optim_args": {"lr": 1.0}, "gamma": 0.5})


def test_a_reinitialized_parameter_starts_its_own_schedule(pyro_ref):
    def run(lib):
        lib.clear_param_store()
        sched = lib.optim.ExponentialLR(
            {"optimizer": torch.optim.SGD, "optim_args": {"lr": 1.0}, "gamma": 0.5}
        )
        for _ in range(3):
            leaf = lib.param("a", torch.tensor(0.0)).unconstrained()
            leaf.grad = torch.tensor(1.0)
            sched([leaf])
            leaf.grad = None
            sched.step()
        lib.get_param_store()["a"] = torch.tensor(0.0)
        leaf = lib.param("a").unconstrained()
        leaf.grad = torch.tensor(1.0)
        sched([leaf])
        return lib.param("a").item()

    expected, actual = _run_both(pyro_ref, run)
    assert actual == expected == -1.0


def test_going_back_to_an_earlier_scheduler_state_forgets_later_schedules(tmp_path):
    from miniprob.checkpoint import load_checkpoint, save_checkpoint

    def epoch(sched, e):
        names = ["a"] if e < 3 else ["a", "h"]  # "h" first appears at epoch 3
        for n in names:
            pyro.param(n, torch.tensor(0.0))
        _step(sched, names)
        sched.step()

    sched = _sched()
    for e in range(2):
        epoch(sched, e)
    save_checkpoint(tmp_path / "ck.pt", scheduler=sched)
    for e in range(2, 6):
        epoch(sched, e)
    load_checkpoint(tmp_path / "ck.pt", scheduler=sched)
    for e in range(2, 4):
        epoch(sched, e)
    rolled_back = pyro.param("h").item()
    pyro.clear_param_store()
    sched = _sched()
    for e in range(4):
        epoch(sched, e)
    assert rolled_back == pyro.param("h").item() == -1.0


def test_a_scheduler_that_cannot_be_built_registers_nothing():
    sched = StepLR({"optimizer": torch.optim.SGD, "optim_args": {"lr": 1.0}, "step_sise": 1})
    pyro.param("a", torch.tensor(0.0))
    for _ in range(2):  # the second call fails again: nothing was left half-registered
        with pytest.raises(TypeError, match="step_sise"):
            _step(sched, ["a"])
    assert sched.optimizers() == [] and pyro.param("a").item() == 0.0


def test_clip_args_accept_none_and_numpy_numbers_as_pyro_does():
    import numpy as np

    make_params(["a"])
    optim = SGD({"lr": 1.0}, clip_args={"clip_norm": None, "clip_value": np.float32(0.5)})
    apply(optim, {"a": [3.0, -3.0]})
    torch.testing.assert_close(pyro.param("a"), torch.tensor([0.0, 0.0]))  # 0.5 -/+ 0.5


def test_an_integer_rate_is_not_grouped_with_an_equal_float_one():
    make_params(["a", "b"])
    optim = SGD(lambda name: {"lr": 1} if name == "a" else {"lr": 1.0})
    apply(optim, {"a": [1.0, 1.0], "b": [1.0]})
    rates = {n: s["param_groups"][0]["lr"] for n, s in optim.get_state().items()}
    assert type(rates["a"]) is int and type(rates["b"]) is float
