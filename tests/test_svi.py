"""SVI: steps, run (history and progress bar), evaluate_loss, callable losses, checkpoints."""

import warnings

import pytest
import torch

import miniprob as pyro
import miniprob.distributions as dist
from miniprob.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from miniprob.optim import SGD, Adam, ClippedAdam

DATA = torch.tensor([0.3, -1.2, 2.0, 0.7, 1.1])


def model(data=DATA):
    loc = pyro.sample("loc", dist.Normal(0.0, 2.0))
    with pyro.plate("data", len(data)):
        z = pyro.sample("z", dist.Normal(loc, 1.0))
        pyro.sample("obs", dist.Normal(z, 0.5), obs=data)


def guide(data=DATA):
    m = pyro.param("m", torch.tensor(0.1))
    s = pyro.param("s", torch.tensor(1.0), constraint=dist.constraints.positive)
    pyro.sample("loc", dist.Normal(m, s))
    zm = pyro.param("zm", torch.zeros(len(data)))
    with pyro.plate("data", len(data)):
        pyro.sample("z", dist.Normal(zm, 0.7))


def params():
    return {name: value.detach().clone() for name, value in pyro.get_param_store().items()}


def leaves():
    return dict(pyro.get_param_store().named_parameters())


def fresh_svi(optim=None, loss=None, seed=0):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    return SVI(model, guide, optim or Adam({"lr": 0.05}), loss or Trace_ELBO())


# ---- step and run ------------------------------------------------------------------------


def test_step_returns_the_loss_as_a_float_and_leaves_no_gradients():
    svi = fresh_svi()
    loss = svi.step()
    assert type(loss) is float
    assert set(leaves()) == {"m", "s", "zm"}
    assert all(leaf.grad is None for leaf in leaves().values())


def test_step_moves_the_parameters_by_the_optimizer_update():
    """One SGD step is ``leaf - lr * grad`` with the gradient of the loss at the same seed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    loss = Trace_ELBO().differentiable_loss(model, guide)
    before = {name: leaf.detach().clone() for name, leaf in leaves().items()}
    grads = dict(zip(before, torch.autograd.grad(loss, list(leaves().values())), strict=True))
    fresh_svi(SGD({"lr": 0.1})).step()
    for name, leaf in leaves().items():
        torch.testing.assert_close(leaf.detach(), before[name] - 0.1 * grads[name])


def test_run_returns_the_loss_history_of_step():
    svi = fresh_svi()
    expected = [svi.step() for _ in range(12)]
    expected_params = params()
    svi = fresh_svi()
    history = svi.run(12, progress=False)
    assert history == expected
    assert all(torch.equal(value, expected_params[name]) for name, value in params().items())


def test_run_passes_arguments_to_model_and_guide():
    data = torch.tensor([5.0, 6.0])
    history = fresh_svi().run(3, data, progress=False)
    assert len(history) == 3
    assert pyro.param("zm").shape == (2,)


def test_run_shows_a_progress_bar_on_stderr(capsys):
    fresh_svi().run(15, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "15/15" in captured.err and "SVI" in captured.err and "loss=" in captured.err


def test_run_without_progress_writes_nothing(capsys):
    fresh_svi().run(15, progress=False)
    assert capsys.readouterr() == ("", "")


# ---- losses ------------------------------------------------------------------------------


def test_step_keyword_arguments_reach_model_and_guide_through_an_elbo():
    seen = []

    def model_kw(scale=1.0):
        seen.append(("model", scale))
        pyro.sample("x", dist.Normal(0.0, scale))

    def guide_kw(scale=1.0):
        seen.append(("guide", scale))
        pyro.sample("x", dist.Normal(pyro.param("m", torch.tensor(0.0)), scale))

    SVI(model_kw, guide_kw, Adam({"lr": 0.1}), Trace_ELBO()).step(scale=3.0)
    assert seen == [("guide", 3.0), ("model", 3.0)]


def test_step_keyword_arguments_reach_a_callable_loss():
    seen = []

    def loss(model, guide, *args, annealing_factor=1.0, **kwargs):
        seen.append((args, annealing_factor, kwargs))
        return annealing_factor * Trace_ELBO().differentiable_loss(model, guide, *args, **kwargs)

    svi = SVI(model, guide, Adam({"lr": 0.1}), loss)
    value = svi.step(DATA, annealing_factor=0.25)
    assert type(value) is float
    ((args, factor, rest),) = seen
    assert args == (DATA,) and factor == 0.25 and rest == {}


def test_a_callable_loss_step_warns_about_nothing():
    """The float of a callable loss comes from a detached tensor: no requires_grad warning."""
    svi = fresh_svi(loss=Trace_ELBO().differentiable_loss)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        svi.step()
        svi.evaluate_loss()


def test_an_elbo_instance_is_a_callable_loss():
    """``elbo(model, guide, *args)`` is its differentiable loss (a miniprob extension; with
    no further arguments it is Pyro's ``ELBOModule``): SVI gives the same result either way."""
    svi = fresh_svi()
    expected = [svi.step(DATA) for _ in range(5)]
    expected_params = params()
    svi = fresh_svi(loss=Trace_ELBO().__call__)
    got = [svi.step(DATA) for _ in range(5)]
    assert got == pytest.approx(expected, rel=1e-6)
    for name, value in params().items():
        torch.testing.assert_close(value, expected_params[name], atol=1e-6, rtol=0)


@pytest.mark.parametrize("loss", [Trace_ELBO(), TraceMeanField_ELBO(), "callable"])
def test_evaluate_loss_takes_no_gradients_and_changes_nothing(loss):
    grad_modes = []

    def callable_loss(model, guide, *args, **kwargs):
        grad_modes.append(torch.is_grad_enabled())
        return Trace_ELBO().differentiable_loss(model, guide, *args, **kwargs)

    svi = fresh_svi(loss=callable_loss if loss == "callable" else loss)
    svi.step()
    before = params()
    pyro.set_rng_seed(5)
    value = svi.evaluate_loss()
    assert type(value) is float
    assert all(leaf.grad is None for leaf in leaves().values())
    assert all(torch.equal(v, before[k]) for k, v in params().items())
    pyro.set_rng_seed(5)
    expected = (Trace_ELBO() if loss == "callable" else loss).loss(model, guide)
    assert value == pytest.approx(expected, rel=1e-6)
    if loss == "callable":
        assert grad_modes == [True, False]


def test_svi_rejects_a_torch_optimizer():
    with pytest.raises(TypeError, match="miniprob.optim"):
        SVI(model, guide, torch.optim.Adam, Trace_ELBO())


# ---- checkpoints -------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["new", "same"])
@pytest.mark.parametrize(
    "make_optim",
    [
        lambda: Adam({"lr": 0.05, "betas": (0.8, 0.95)}),
        lambda: ClippedAdam({"lr": 0.05, "lrd": 0.95}),
        lambda: SGD({"lr": 0.01, "momentum": 0.9}),
    ],
    ids=["adam", "clipped_adam", "sgd_momentum"],
)
def test_checkpoint_resume_is_bit_for_bit(tmp_path, optimizer, make_optim):
    """15 steps equal 5 steps, save both stores to files, clear, load, 10 more steps."""
    svi = fresh_svi(make_optim())
    expected = [svi.step() for _ in range(15)]
    expected_params = params()

    optim = make_optim()
    svi = fresh_svi(optim)
    losses = [svi.step() for _ in range(5)]
    pyro.get_param_store().save(tmp_path / "params.pt")
    optim.save(tmp_path / "optim.pt")
    torch.save(torch.get_rng_state(), tmp_path / "rng.pt")
    pyro.clear_param_store()
    torch.manual_seed(123)

    pyro.get_param_store().load(tmp_path / "params.pt")
    if optimizer == "new":
        optim = make_optim()
        svi = SVI(model, guide, optim, Trace_ELBO())
    optim.load(tmp_path / "optim.pt")
    torch.set_rng_state(torch.load(tmp_path / "rng.pt"))
    losses += [svi.step() for _ in range(10)]

    assert losses == expected
    assert params().keys() == expected_params.keys()
    for name, value in params().items():
        assert torch.equal(value, expected_params[name]), name


def test_resuming_without_the_optimizer_state_differs():
    """The check above has teeth: a fresh Adam state after a reload changes the trajectory."""
    svi = fresh_svi()
    expected = [svi.step() for _ in range(8)]
    svi = fresh_svi()
    losses = [svi.step() for _ in range(3)]
    state = pyro.get_param_store().get_state()
    rng = torch.get_rng_state()
    pyro.clear_param_store()
    pyro.get_param_store().set_state(state)
    torch.set_rng_state(rng)
    svi = SVI(model, guide, Adam({"lr": 0.05}), Trace_ELBO())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SVI may warn that the store already held parameters
        losses += [svi.step() for _ in range(5)]
    assert losses[:3] == expected[:3]
    assert losses[3:] != expected[3:]


def test_a_custom_loss_and_grads_is_used_and_unknown_keywords_are_refused():
    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0))

    def guide():
        pyro.sample("x", dist.Normal(pyro.param("m", torch.tensor(1.0)), 1.0))

    calls = []

    def loss_and_grads(model, guide, *args, **kwargs):
        calls.append(1)
        (pyro.param("m", torch.tensor(1.0)) ** 2).backward()
        return 7.0

    svi = SVI(model, guide, Adam({"lr": 0.1}), Trace_ELBO().differentiable_loss, loss_and_grads)
    assert svi.step() == 7.0 and calls == [1]
    assert pyro.param("m").item() == pytest.approx(0.9)
    with pytest.raises(TypeError):
        SVI(model, guide, Adam({"lr": 0.1}), Trace_ELBO(), num_stepz=3)
    with pytest.raises(ValueError, match="callable loss"):
        SVI(model, guide, Adam({"lr": 0.1}), Trace_ELBO(), loss_and_grads=loss_and_grads)
