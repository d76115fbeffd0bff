"""Inference against Pyro: the same program, the same seed, the same numbers.

Each case builds a model, a guide, an optimizer and a loss from a library namespace (``pyro`` or
``miniprob``), runs SVI for a few steps in each, and compares the loss history and the parameter
values after every step. Parameters agree to 1e-6 (mostly bit for bit); losses to a relative
1e-6 (Pyro sums the loss in Python floats, miniprob in float32 tensors).
"""

import pytest
import torch
from objectives import annealed_elbo

import miniprob
import miniprob.distributions
import miniprob.infer
import miniprob.optim
import miniprob.poutine

pytest.importorskip("pyro")
import pyro  # noqa: E402
import pyro.distributions  # noqa: E402
import pyro.infer  # noqa: E402
import pyro.optim  # noqa: E402
import pyro.optim.multi  # noqa: E402
import pyro.poutine  # noqa: E402

LIBS = {"pyro": pyro, "miniprob": miniprob}
DATA = torch.tensor([0.3, -1.2, 2.0, 0.7, 1.1, -0.4])
STEPS = 20


def snapshot(lib):
    return {name: value.detach().clone() for name, value in lib.get_param_store().items()}


def fit(lib, build, steps=STEPS, step_args=lambda i: ((), {}), between_steps=None):
    """Run ``steps`` SVI steps; returns the losses and the parameters after each step."""
    lib.clear_param_store()
    lib.set_rng_seed(0)
    model, guide, optim, loss = build(lib)
    svi = lib.infer.SVI(model, guide, optim, loss)
    losses, trajectory = [], []
    for i in range(steps):
        args, kwargs = step_args(i)
        losses.append(svi.step(*args, **kwargs))
        trajectory.append(snapshot(lib))
        if between_steps is not None:
            between_steps(optim, i, losses[-1])
    lib.clear_param_store()
    return losses, trajectory


def assert_same_fit(expected, actual, atol=1e-6, rtol=1e-6, exact=False):
    (losses_p, traj_p), (losses_m, traj_m) = expected, actual
    assert losses_m == pytest.approx(losses_p, rel=rtol, abs=1e-6)
    for step, (params_p, params_m) in enumerate(zip(traj_p, traj_m, strict=True)):
        assert params_m.keys() == params_p.keys(), f"step {step}"
        for name, value in params_p.items():
            if exact:
                assert torch.equal(params_m[name], value), f"step {step}, param '{name}'"
            else:
                torch.testing.assert_close(
                    params_m[name], value, atol=atol, rtol=0, msg=f"step {step}, param '{name}'"
                )


def both(build, **kwargs):
    return fit(pyro, build, **kwargs), fit(miniprob, build, **kwargs)


# ---- models ------------------------------------------------------------------------------


def normal_normal(lib):
    """A global Normal latent, Normal observations, a Normal guide with a positive scale."""
    dist = lib.distributions

    def model():
        loc = lib.sample("loc", dist.Normal(0.0, 2.0))
        with lib.plate("data", len(DATA)):
            lib.sample("obs", dist.Normal(loc, 1.0), obs=DATA)

    def guide():
        m = lib.param("m", torch.tensor(0.1))
        s = lib.param("s", torch.tensor(1.0), constraint=dist.constraints.positive)
        lib.sample("loc", dist.Normal(m, s))

    return model, guide


def local_latents(lib):
    """A global latent plus a local Normal latent per data point."""
    dist = lib.distributions

    def model():
        loc = lib.sample("loc", dist.Normal(0.0, 2.0))
        with lib.plate("data", len(DATA)):
            z = lib.sample("z", dist.Normal(loc, 1.0))
            lib.sample("obs", dist.Normal(z, 0.5), obs=DATA)

    def guide():
        m = lib.param("m", torch.tensor(0.1))
        s = lib.param("s", torch.tensor(1.0), constraint=dist.constraints.positive)
        lib.sample("loc", dist.Normal(m, s))
        zm = lib.param("zm", torch.zeros(len(DATA)))
        with lib.plate("data", len(DATA)):
            lib.sample("z", dist.Normal(zm, 0.7))

    return model, guide


def discrete_in_plate(subsample_size=None):
    """A Bernoulli latent per data point (score-function gradients), optionally subsampled."""

    def build(lib):
        dist = lib.distributions

        def model():
            loc = lib.sample("loc", dist.Normal(0.0, 2.0))
            with lib.plate("data", len(DATA), subsample_size=subsample_size) as idx:
                z = lib.sample("z", dist.Bernoulli(0.4))
                lib.sample("obs", dist.Normal(loc + 2 * z, 1.0), obs=DATA[idx])

        def guide():
            m = lib.param("m", torch.tensor(0.1))
            s = lib.param("s", torch.tensor(1.0), constraint=dist.constraints.positive)
            lib.sample("loc", dist.Normal(m, s))
            p = lib.param(
                "p", torch.full((len(DATA),), 0.5), constraint=dist.constraints.unit_interval
            )
            with lib.plate("data", len(DATA), subsample_size=subsample_size) as idx:
                lib.sample("z", dist.Bernoulli(p[idx]))

        return model, guide

    return build


def nested_plates_discrete(lib):
    """Poisson latents in an outer plate, Bernoulli latents in a nested plate: Rao-Blackwellized
    score-function terms over two plate levels."""
    dist = lib.distributions
    data = torch.tensor([[0.0, 1.0, 3.0], [2.0, 2.0, 5.0]])

    def model():
        with lib.plate("groups", 2, dim=-2):
            rate = lib.sample("rate", dist.Gamma(2.0, 1.0))
            k = lib.sample("k", dist.Poisson(rate))
            with lib.plate("items", 3, dim=-1):
                b = lib.sample("b", dist.Bernoulli(0.5))
                lib.sample("obs", dist.Normal(k + b, 1.0), obs=data)

    def guide():
        a = lib.param("a", torch.ones(2, 1), constraint=dist.constraints.positive)
        r = lib.param("r", torch.full((2, 1), 2.0), constraint=dist.constraints.positive)
        q = lib.param("q", torch.full((2, 3), 0.5), constraint=dist.constraints.unit_interval)
        with lib.plate("groups", 2, dim=-2):
            lib.sample("rate", dist.Gamma(a + 1, 1.0))
            lib.sample("k", dist.Poisson(r))
            with lib.plate("items", 3, dim=-1):
                lib.sample("b", dist.Bernoulli(q))

    return model, guide


def sequential_plate_discrete(lib):
    """A Bernoulli latent per element of an iterated (non-vectorized) plate."""
    dist = lib.distributions

    def model():
        loc = lib.sample("loc", dist.Normal(0.0, 2.0))
        for i in lib.plate("data", 4):
            z = lib.sample(f"z_{i}", dist.Bernoulli(0.3))
            lib.sample(f"obs_{i}", dist.Normal(loc + z, 1.0), obs=DATA[i])

    def guide():
        m = lib.param("m", torch.tensor(0.1))
        lib.sample("loc", dist.Normal(m, 1.0))
        p = lib.param("p", torch.full((4,), 0.5), constraint=dist.constraints.unit_interval)
        for i in lib.plate("data", 4):
            lib.sample(f"z_{i}", dist.Bernoulli(p[i]))

    return model, guide


def nonreparam_normal(lib):
    """The Normal-Normal model with a guide that hides ``rsample`` (score-function path)."""
    dist = lib.distributions
    normal = type("NonReparamNormal", (dist.Normal,), {"has_rsample": False})
    model, _ = normal_normal(lib)

    def guide():
        m = lib.param("m", torch.tensor(0.1))
        s = lib.param("s", torch.tensor(1.0), constraint=dist.constraints.positive)
        lib.sample("loc", normal(m, s))

    return model, guide


def masked_discrete(lib):
    """Bernoulli latents in a plate masked by a tensor ``.mask()`` in model and guide: the
    masked-out elements keep their score-function gradients (Pyro masks only the costs)."""
    dist = lib.distributions
    mask = torch.tensor([True, False, True, True, False, True])

    def model():
        loc = lib.sample("loc", dist.Normal(0.0, 2.0))
        with lib.plate("data", len(DATA)):
            z = lib.sample("z", dist.Bernoulli(0.4).mask(mask))
            lib.sample("obs", dist.Normal(loc + 2 * z, 1.0), obs=DATA)

    def guide():
        lib.sample("loc", dist.Normal(lib.param("m", torch.tensor(0.1)), 1.0))
        p = lib.param("p", torch.full((len(DATA),), 0.5), constraint=dist.constraints.unit_interval)
        with lib.plate("data", len(DATA)):
            lib.sample("z", dist.Bernoulli(p).mask(mask))

    return model, guide


def mvn_prior(lib):
    """A diagonal Normal guide against a MultivariateNormal prior (a closed-form KL in both)."""
    dist = lib.distributions
    cov = torch.tensor([[2.0, 0.3], [0.3, 1.0]])
    data = DATA.reshape(3, 2)

    def model():
        z = lib.sample("z", dist.MultivariateNormal(torch.zeros(2), cov))
        with lib.plate("data", 3):
            lib.sample("obs", dist.Normal(z, 1.0).to_event(1), obs=data)

    def guide():
        m = lib.param("m", torch.tensor([0.2, -0.1]))
        s = lib.param("s", torch.ones(2), constraint=dist.constraints.positive)
        lib.sample("z", dist.Normal(m, s).to_event(1))

    return model, guide


def with_optim(models, optim=lambda lib: lib.optim.Adam({"lr": 0.05}), loss=None):
    def build(lib):
        model, guide = models(lib)
        return model, guide, optim(lib), (loss or (lambda lib: lib.infer.Trace_ELBO()))(lib)

    return build


# ---- SVI with ELBOs and optimizers ---------------------------------------------------------

ELBO_CASES = {
    "trace_elbo": (normal_normal, lambda lib: lib.infer.Trace_ELBO()),
    "mean_field": (local_latents, lambda lib: lib.infer.TraceMeanField_ELBO()),
    "particles_looped": (local_latents, lambda lib: lib.infer.Trace_ELBO(num_particles=3)),
    "particles_vectorized": (
        local_latents,
        lambda lib: lib.infer.Trace_ELBO(num_particles=3, vectorize_particles=True),
    ),
    "particles_vectorized_nesting_given": (
        local_latents,
        lambda lib: lib.infer.Trace_ELBO(
            num_particles=4, vectorize_particles=True, max_plate_nesting=1
        ),
    ),
    "mean_field_vectorized": (
        local_latents,
        lambda lib: lib.infer.TraceMeanField_ELBO(num_particles=3, vectorize_particles=True),
    ),
    "discrete_in_plate": (discrete_in_plate(), lambda lib: lib.infer.Trace_ELBO()),
    "discrete_subsampled": (discrete_in_plate(3), lambda lib: lib.infer.Trace_ELBO()),
    "discrete_vectorized_particles": (
        discrete_in_plate(),
        lambda lib: lib.infer.Trace_ELBO(num_particles=5, vectorize_particles=True),
    ),
    "nested_plates_discrete": (nested_plates_discrete, lambda lib: lib.infer.Trace_ELBO()),
    "sequential_plate_discrete": (sequential_plate_discrete, lambda lib: lib.infer.Trace_ELBO()),
    "nonreparam_guide": (nonreparam_normal, lambda lib: lib.infer.Trace_ELBO(num_particles=2)),
    "masked_discrete": (masked_discrete, lambda lib: lib.infer.Trace_ELBO()),
    "mean_field_mvn_prior": (mvn_prior, lambda lib: lib.infer.TraceMeanField_ELBO()),
}


# Bit for bit where the autograd graphs are alike; elsewhere Pyro's extra no-op ``expand``s and
# the per-particle backward passes reorder float sums (differences of about one ulp).
EXACT = {
    "trace_elbo",
    "mean_field",
    "mean_field_vectorized",
    "discrete_in_plate",
    "discrete_subsampled",
    "discrete_vectorized_particles",
    "nested_plates_discrete",
    "sequential_plate_discrete",
    "nonreparam_guide",
    "masked_discrete",
    "mean_field_mvn_prior",
    "clip_value",
    "clipped_adam_lrd",
}


@pytest.mark.parametrize("case", sorted(ELBO_CASES))
def test_svi_matches_pyro_across_elbos(case):
    models, loss = ELBO_CASES[case]
    expected, actual = both(with_optim(models, loss=loss))
    assert_same_fit(expected, actual, exact=case in EXACT)


OPTIM_CASES = {
    "adam": lambda lib: lib.optim.Adam({"lr": 0.05, "betas": (0.8, 0.99)}),
    "clip_norm": lambda lib: lib.optim.Adam({"lr": 0.05}, {"clip_norm": 0.5}),
    "clip_value": lambda lib: lib.optim.Adam({"lr": 0.05}, {"clip_value": 0.2}),
    "clip_both": lambda lib: lib.optim.SGD({"lr": 0.01}, {"clip_norm": 1.0, "clip_value": 0.3}),
    "per_param_lr": lambda lib: lib.optim.Adam(
        lambda name: {"lr": 0.1} if name == "m" else {"lr": 0.01, "betas": (0.5, 0.9)}
    ),
    "sgd_momentum": lambda lib: lib.optim.SGD({"lr": 0.01, "momentum": 0.9}),
    "rmsprop": lambda lib: lib.optim.RMSprop({"lr": 0.01}),
    "adagrad": lambda lib: lib.optim.Adagrad({"lr": 0.1}),
    "adamw": lambda lib: lib.optim.AdamW({"lr": 0.05, "weight_decay": 0.1}),
    "clipped_adam_lrd": lambda lib: lib.optim.ClippedAdam(
        {"lr": 0.1, "clip_norm": 2.0, "lrd": 0.9, "betas": (0.9, 0.99)}
    ),
    "clipped_adam_centered": lambda lib: lib.optim.ClippedAdam(
        {"lr": 0.1, "clip_norm": 2.0, "betas": (0.8, 0.9), "centered_variance": True}
    ),
    "per_param_lr_two_args": lambda lib: lib.optim.Adam(
        lambda module, name: {"lr": 0.1} if (module, name) == ("m", "m") else {"lr": 0.02}
    ),
    "per_param_clip": lambda lib: lib.optim.Adam(
        {"lr": 0.05},
        lambda module, name: {"clip_norm": 0.3} if name == "zm" else {"clip_value": 0.05},
    ),
}


@pytest.mark.parametrize("case", sorted(OPTIM_CASES))
def test_svi_matches_pyro_across_optimizers(case):
    expected, actual = both(with_optim(local_latents, optim=OPTIM_CASES[case]))
    assert_same_fit(expected, actual, exact=case in EXACT)


@pytest.mark.parametrize(
    "scheduler",
    [
        lambda lib: lib.optim.ExponentialLR(
            {"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.1}, "gamma": 0.8}
        ),
        lambda lib: lib.optim.StepLR(
            {"optimizer": torch.optim.SGD, "optim_args": {"lr": 0.02}, "step_size": 2, "gamma": 0.5}
        ),
    ],
    ids=["exponential", "step"],
)
def test_lr_scheduler_matches_pyro(scheduler):
    def every_third_step(optim, i, loss):
        if i % 3 == 2:
            optim.step()

    expected, actual = both(
        with_optim(local_latents, optim=scheduler), between_steps=every_third_step
    )
    assert_same_fit(expected, actual)


def test_reduce_lr_on_plateau_matches_pyro():
    def plateau(lib):
        return lib.optim.ReduceLROnPlateau(
            {"optimizer": torch.optim.SGD, "optim_args": {"lr": 0.05}, "patience": 1, "factor": 0.5}
        )

    def step_on_loss(optim, i, loss):
        optim.step(loss)

    expected, actual = both(with_optim(normal_normal, optim=plateau), between_steps=step_on_loss)
    assert_same_fit(expected, actual, exact=True)


def late_param(lib):
    """A latent (and its guide parameter) that first appears at step 3."""
    dist = lib.distributions

    def model(step):
        lib.sample("a", dist.Normal(0.0, 1.0))
        if step >= 3:
            lib.sample("b", dist.Normal(1.0, 1.0))

    def guide(step):
        lib.sample("a", dist.Normal(lib.param("m", torch.tensor(0.5)), 1.0))
        if step >= 3:
            lib.sample("b", dist.Normal(lib.param("late", torch.tensor(0.5)), 1.0))

    return model, guide


def every_step(optim, i, loss):
    optim.step()


@pytest.mark.parametrize(
    "optim, between_steps",
    [
        (lambda lib: lib.optim.Adam({"lr": 0.1}), None),
        (lambda lib: lib.optim.ClippedAdam({"lr": 0.1, "lrd": 0.5}), None),
        (lambda lib: lib.optim.Adagrad({"lr": 0.1}), None),
        (
            lambda lib: lib.optim.ExponentialLR(
                {"optimizer": torch.optim.SGD, "optim_args": {"lr": 0.1}, "gamma": 0.5}
            ),
            every_step,
        ),
    ],
    ids=["adam", "clipped_adam", "adagrad", "exponential_lr"],
)
def test_parameters_appearing_later_match_pyro(optim, between_steps):
    expected, actual = both(
        with_optim(late_param, optim=optim),
        steps=8,
        step_args=lambda i: ((i,), {}),
        between_steps=between_steps,
    )
    assert_same_fit(expected, actual, exact=True)


def intermittent_param(lib):
    """``k`` is read at every step but reaches the loss only at steps 1 and 4; ``j`` is read
    from the start but first reaches the loss at step 3."""
    dist = lib.distributions

    def model(step):
        lib.sample("a", dist.Normal(0.0, 1.0))

    def guide(step):
        m = lib.param("m", torch.tensor(0.5))
        k = lib.param("k", torch.tensor(0.5))
        j = lib.param("j", torch.tensor(0.2))
        loc = m + k if step in (1, 4) else m
        lib.sample("a", dist.Normal(loc + j if step >= 3 else loc, 1.0))

    return model, guide


@pytest.mark.parametrize(
    "optim",
    [
        lambda lib: lib.optim.Adam({"lr": 0.1}),
        lambda lib: lib.optim.ClippedAdam({"lr": 0.1, "lrd": 0.5}),
        lambda lib: lib.optim.SGD({"lr": 0.1, "momentum": 0.9}),
    ],
    ids=["adam", "clipped_adam", "sgd_momentum"],
)
def test_parameters_read_but_not_in_the_loss_match_pyro(optim):
    """Pyro zeroes gradients after a step: a parameter that had a gradient moves on with a
    zero one when it misses the loss; one that never had a gradient is not updated."""
    expected, actual = both(
        with_optim(intermittent_param, optim=optim), steps=7, step_args=lambda i: ((i,), {})
    )
    assert_same_fit(expected, actual, exact=True)


# ---- callable losses, scaling ------------------------------------------------------------


def simple_elbo(lib):
    """The custom-objectives tutorial's ELBO: trace the guide, replay the model."""

    def loss(model, guide, *args, **kwargs):
        guide_trace = lib.poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = lib.poutine.trace(lib.poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
        return -(model_trace.log_prob_sum() - guide_trace.log_prob_sum())

    return loss


def test_callable_loss_matches_pyro():
    expected, actual = both(with_optim(local_latents, loss=simple_elbo))
    assert_same_fit(expected, actual)


def test_callable_loss_with_step_kwargs_matches_pyro():
    def step_args(i):
        return (), {"annealing_factor": 0.1 + 0.04 * i, "latents_to_anneal": ["z"]}

    expected, actual = both(with_optim(local_latents, loss=annealed_elbo), step_args=step_args)
    assert_same_fit(expected, actual)


def annealed_latents(lib):
    """Local latents whose model and guide sites sit under ``poutine.scale(beta)``."""
    dist = lib.distributions

    def model(beta):
        loc = lib.sample("loc", dist.Normal(0.0, 2.0))
        with lib.plate("data", len(DATA)):
            with lib.poutine.scale(scale=beta):
                z = lib.sample("z", dist.Normal(loc, 1.0))
            lib.sample("obs", dist.Normal(z, 0.5), obs=DATA)

    def guide(beta):
        m = lib.param("m", torch.tensor(0.1))
        lib.sample("loc", dist.Normal(m, 1.0))
        zm = lib.param("zm", torch.zeros(len(DATA)))
        with lib.plate("data", len(DATA)), lib.poutine.scale(scale=beta):
            lib.sample("z", dist.Normal(zm, 0.7))

    return model, guide


@pytest.mark.parametrize("loss", ["Trace_ELBO", "TraceMeanField_ELBO"])
@pytest.mark.parametrize("beta", ["float", "tensor_per_step"])
def test_kl_annealing_with_scale_matches_pyro(loss, beta):
    def step_args(i):
        if beta == "float":
            return (4.0,), {}
        return (torch.tensor(0.05 + 0.05 * i),), {}

    build = with_optim(annealed_latents, loss=lambda lib: getattr(lib.infer, loss)())
    expected, actual = both(build, step_args=step_args)
    assert_same_fit(expected, actual)


def beta_vae(lib):
    """A tiny VAE (``pyro.module`` encoder and decoder) whose latent terms are scaled by
    ``beta`` through ``poutine.scale``."""
    dist = lib.distributions
    data = DATA.reshape(3, 2)
    torch.manual_seed(11)
    encoder, decoder = torch.nn.Linear(2, 2), torch.nn.Linear(1, 2)

    def model(beta):
        lib.module("decoder", decoder)
        with lib.plate("data", 3):
            with lib.poutine.scale(scale=beta):
                z = lib.sample("z", dist.Normal(torch.zeros(3, 1), 1.0).to_event(1))
            lib.sample("obs", dist.Normal(decoder(z), 0.5).to_event(1), obs=data)

    def guide(beta):
        lib.module("encoder", encoder)
        out = encoder(data)
        scale = torch.nn.functional.softplus(out[:, 1:])
        with lib.plate("data", 3), lib.poutine.scale(scale=beta):
            lib.sample("z", dist.Normal(out[:, :1], scale).to_event(1))

    return model, guide


@pytest.mark.parametrize("loss", ["Trace_ELBO", "TraceMeanField_ELBO"])
def test_beta_vae_matches_pyro(loss):
    build = with_optim(beta_vae, loss=lambda lib: getattr(lib.infer, loss)())
    expected, actual = both(build, step_args=lambda i: ((4.0,), {}))
    assert_same_fit(expected, actual, exact=True)


@pytest.mark.parametrize(
    "case", ["discrete_in_plate", "nonreparam_guide", "particles_looped", "nested_plates_discrete"]
)
def test_differentiable_loss_value_and_gradients_match_pyro(case):
    """The value is the loss (not the score-function surrogate); the gradients are the
    surrogate's."""
    models, loss = ELBO_CASES[case]

    def evaluate(lib):
        lib.clear_param_store()
        lib.set_rng_seed(0)
        model, guide = models(lib)
        value = loss(lib).differentiable_loss(model, guide)
        names = list(lib.get_param_store().keys())
        leaves = [lib.get_param_store()[name].unconstrained() for name in names]
        grads = dict(zip(names, torch.autograd.grad(value, leaves), strict=True))
        lib.clear_param_store()
        return value.detach(), grads

    (value_p, grads_p), (value_m, grads_m) = evaluate(pyro), evaluate(miniprob)
    torch.testing.assert_close(value_m, value_p, rtol=1e-6, atol=0)
    assert grads_m.keys() == grads_p.keys()
    for name, grad in grads_p.items():
        torch.testing.assert_close(grads_m[name], grad, rtol=0, atol=1e-6)


# ---- networks ----------------------------------------------------------------------------


def amortized(lib):
    """A guide whose local latents come from a ``pyro.module`` nn.Linear encoder."""
    dist = lib.distributions
    data = DATA.reshape(3, 2)
    torch.manual_seed(7)
    encoder = torch.nn.Linear(2, 2)

    def model():
        with lib.plate("data", 3):
            z = lib.sample("z", dist.Normal(0.0, 1.0))
            lib.sample("obs", dist.Normal(z.unsqueeze(-1), 1.0).to_event(1), obs=data)

    def guide():
        lib.module("encoder", encoder)
        out = encoder(data)
        with lib.plate("data", 3):
            lib.sample("z", dist.Normal(out[:, 0], torch.nn.functional.softplus(out[:, 1])))

    return model, guide


def test_pyro_module_guide_matches_pyro():
    expected, actual = both(with_optim(amortized))
    assert list(actual[1][-1]) == ["encoder$$$weight", "encoder$$$bias"]
    assert_same_fit(expected, actual, exact=True)


def test_per_param_lr_sees_module_param_names_with_dots():
    seen = {"pyro": [], "miniprob": []}

    def optim(lib):
        def args(name):
            seen[lib.__name__].append(name)
            return {"lr": 0.1 if name.endswith("weight") else 0.01}

        return lib.optim.Adam(args)

    expected, actual = both(with_optim(amortized, optim=optim))
    assert seen["miniprob"] == seen["pyro"] == ["encoder.weight", "encoder.bias"]
    assert_same_fit(expected, actual, exact=True)


# ---- MixedMultiOptimizer -----------------------------------------------------------------


def mixed_fit(lib, steps=STEPS):
    lib.clear_param_store()
    lib.set_rng_seed(0)
    model, guide = local_latents(lib)
    optim = lib.optim.multi.MixedMultiOptimizer(
        [(["m", "zm"], lib.optim.Adam({"lr": 0.05})), (["s"], lib.optim.SGD({"lr": 0.01}))]
    )
    elbo = lib.infer.Trace_ELBO()
    losses, trajectory = [], []
    for _ in range(steps):
        with lib.poutine.trace(param_only=True) as capture:
            loss = elbo.differentiable_loss(model, guide)
        params = {name: site["value"].unconstrained() for name, site in capture.trace.nodes.items()}
        optim.step(loss, params)
        losses.append(loss.item())
        trajectory.append(snapshot(lib))
    lib.clear_param_store()
    return losses, trajectory


def test_mixed_multi_optimizer_matches_pyro_on_unconstrained_leaves():
    assert_same_fit(mixed_fit(pyro), mixed_fit(miniprob))


# ---- Predictive --------------------------------------------------------------------------


def predictive_model(lib):
    dist = lib.distributions

    def model(data):
        loc = lib.sample("loc", dist.Normal(0.0, 2.0))
        scale = lib.sample("scale", dist.LogNormal(0.0, 0.5))
        with lib.plate("data", len(data)):
            z = lib.sample("z", dist.Bernoulli(0.3))
            obs = lib.sample("obs", dist.Normal(loc + z, scale), obs=data)
        return loc + obs.mean()

    def guide(data):
        m = lib.param("m", torch.tensor(0.5))
        lib.sample("loc", dist.Normal(m, 0.3))
        lib.sample("scale", dist.LogNormal(0.0, 0.2))

    return model, guide


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
@pytest.mark.parametrize(
    "source, return_sites",
    [
        ("guide", ()),
        ("guide", ("loc", "obs", "_RETURN")),
        ("posterior", ()),
        ("posterior", ("z", "_RETURN")),
        ("prior", ("loc", "obs")),
    ],
)
def test_predictive_matches_pyro(parallel, source, return_sites):
    def draw(lib):
        lib.clear_param_store()
        lib.set_rng_seed(3)
        model, guide = predictive_model(lib)
        kwargs = {"num_samples": 4, "return_sites": return_sites, "parallel": parallel}
        if source == "guide":
            kwargs["guide"] = guide
        elif source == "posterior":
            kwargs["posterior_samples"] = {
                "loc": torch.linspace(-1.0, 1.0, 4),
                "scale": torch.tensor([0.5, 1.0, 1.5, 2.0]),
            }
            del kwargs["num_samples"]
        return lib.infer.Predictive(model, **kwargs)(DATA)

    expected, actual = draw(pyro), draw(miniprob)
    assert sorted(actual) == sorted(expected)
    for name, value in expected.items():
        assert actual[name].shape == value.shape, name
        assert torch.equal(actual[name], value), name
