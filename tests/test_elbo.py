"""ELBO estimators against closed forms: single-sample losses and gradients, pathwise and
score-function (Rao-Blackwellized over plates), analytic KL, particles, scaling, and the checks
on how model and guide match."""

import math
import warnings

import pytest
import torch
from objectives import annealed_elbo

import miniprob as pyro
import miniprob.distributions as dist
from miniprob import poutine
from miniprob.infer import Trace_ELBO, TraceMeanField_ELBO

F64 = torch.float64
Y = torch.tensor([0.3, -1.2, 2.0, 0.7], dtype=F64)
MU0, SIGMA0, SIGMA = 0.5, 2.0, 0.8  # prior loc and scale of z; scale of the observations
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def t(x):
    return torch.tensor(x, dtype=F64)


def normal_logpdf(x, loc, scale):
    return -0.5 * ((x - loc) / scale) ** 2 - math.log(scale) - HALF_LOG_2PI


class NonReparamNormal(dist.Normal):
    """A Normal that hides its ``rsample``: the ELBO must use the score function."""

    has_rsample = False


def model(y=Y):
    z = pyro.sample("z", dist.Normal(t(MU0), t(SIGMA0)))
    with pyro.plate("data", len(y)):
        pyro.sample("obs", dist.Normal(z, t(SIGMA)), obs=y)


def make_guide(normal=dist.Normal, m0=0.3, s0=0.7):
    def guide(y=Y):
        m = pyro.param("m", t(m0))
        s = pyro.param("s", t(s0), constraint=dist.constraints.positive)
        pyro.sample("z", normal(m, s))

    return guide


def leaf_grads(loss):
    """Gradients of ``loss`` with respect to every parameter's unconstrained leaf, by name."""
    named = dict(pyro.get_param_store().named_parameters())
    return dict(zip(named, torch.autograd.grad(loss, list(named.values())), strict=True))


def draw(fn, seed, *args):
    """The guide trace that an ELBO evaluated at ``seed`` will see (guides run first)."""
    pyro.set_rng_seed(seed)
    return poutine.trace(fn).get_trace(*args)


def dlogp_dz(z):
    """d/dz of log p(z) + log p(y | z) for the Normal-Normal model."""
    return -(z - MU0) / SIGMA0**2 + ((Y - z) / SIGMA**2).sum()


def log_joint(z):
    return normal_logpdf(z, MU0, SIGMA0) + normal_logpdf(Y, z, SIGMA).sum()


# ---- pathwise gradients ------------------------------------------------------------------


def test_trace_elbo_reparameterized_loss_and_gradient_are_the_closed_form_at_the_sample():
    guide = make_guide()
    z = draw(guide, 0).nodes["z"]["value"].detach()
    m, s = 0.3, 0.7
    eps = (z - m) / s
    pyro.set_rng_seed(0)
    loss = Trace_ELBO().differentiable_loss(model, guide)
    expected_loss = -(log_joint(z) - normal_logpdf(z, m, s))
    torch.testing.assert_close(loss, expected_loss)
    grads = leaf_grads(loss)
    # d(-ELBO)/dm = -g(z); d(-ELBO)/ds = -g(z) eps - 1/s; the leaf of s is log s.
    g = dlogp_dz(z)
    torch.testing.assert_close(grads["m"], -g)
    torch.testing.assert_close(grads["s"], s * (-g * eps - 1 / s))


def test_trace_mean_field_elbo_uses_the_analytic_kl():
    guide = make_guide()
    z = draw(guide, 1).nodes["z"]["value"].detach()
    m, s = 0.3, 0.7
    eps = (z - m) / s
    kl = math.log(SIGMA0 / s) + (s**2 + (m - MU0) ** 2) / (2 * SIGMA0**2) - 0.5
    pyro.set_rng_seed(1)
    loss = TraceMeanField_ELBO().differentiable_loss(model, guide)
    torch.testing.assert_close(loss, -normal_logpdf(Y, z, SIGMA).sum() + kl)
    grads = leaf_grads(loss)
    g_obs = ((Y - z) / SIGMA**2).sum()
    torch.testing.assert_close(grads["m"], -g_obs + (m - MU0) / SIGMA0**2)
    torch.testing.assert_close(grads["s"], s * (-g_obs * eps + s / SIGMA0**2 - 1 / s))


def test_loss_and_grads_accumulates_the_gradient_of_differentiable_loss():
    guide = make_guide()
    pyro.set_rng_seed(2)
    expected = leaf_grads(Trace_ELBO().differentiable_loss(model, guide))
    pyro.set_rng_seed(2)
    value = Trace_ELBO().loss_and_grads(model, guide)
    pyro.set_rng_seed(2)
    assert value == pytest.approx(Trace_ELBO().loss(model, guide), rel=1e-12)
    for name, leaf in pyro.get_param_store().named_parameters():
        torch.testing.assert_close(leaf.grad, expected[name])


def test_loss_is_a_float_without_a_graph():
    value = Trace_ELBO().loss(model, make_guide())
    assert type(value) is float
    assert all(leaf.grad is None for _, leaf in pyro.get_param_store().named_parameters())


# ---- score-function gradients ------------------------------------------------------------


def test_score_function_gradient_of_a_non_reparameterized_normal_guide():
    guide = make_guide(NonReparamNormal)
    z = draw(guide, 3).nodes["z"]["value"]
    assert not z.requires_grad
    m, s = 0.3, 0.7
    pyro.set_rng_seed(3)
    loss = Trace_ELBO().differentiable_loss(model, guide)
    cost = log_joint(z) - normal_logpdf(z, m, s)  # log p - log q at the sample
    torch.testing.assert_close(loss, -cost)  # the value is the loss, not the surrogate
    grads = leaf_grads(loss)
    dlogq_dm = (z - m) / s**2
    dlogq_ds = (z - m) ** 2 / s**3 - 1 / s
    torch.testing.assert_close(grads["m"], -cost * dlogq_dm)
    torch.testing.assert_close(grads["s"], s * (-cost * dlogq_ds))


def test_score_function_loss_value_is_the_negative_elbo_at_the_sample():
    guide = make_guide(NonReparamNormal)
    z = draw(guide, 3).nodes["z"]["value"]
    pyro.set_rng_seed(3)
    value = Trace_ELBO().loss(model, guide)
    assert value == pytest.approx(-float(log_joint(z) - normal_logpdf(z, 0.3, 0.7)), rel=1e-12)


@pytest.mark.parametrize("num_particles", [1, 3])
def test_differentiable_loss_of_a_score_function_guide_has_the_value_of_loss(num_particles):
    elbo = Trace_ELBO(num_particles=num_particles)
    pyro.set_rng_seed(12)
    value = elbo.differentiable_loss(model, make_guide(NonReparamNormal))
    pyro.set_rng_seed(12)
    assert value.item() == pytest.approx(elbo.loss(model, make_guide(NonReparamNormal)), rel=1e-12)


def bernoulli_model(y):
    z = pyro.sample("z", dist.Bernoulli(t(0.3)))
    pyro.sample("obs", dist.Normal(2 * z, t(1.0)), obs=y)


def bernoulli_guide(y):
    p = pyro.param("p", t(0.6), constraint=dist.constraints.unit_interval)
    pyro.sample("z", dist.Bernoulli(p))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_score_function_gradient_of_a_bernoulli_latent(seed):
    y = t(1.5)
    z = draw(bernoulli_guide, seed, y).nodes["z"]["value"]
    p = 0.6
    pyro.set_rng_seed(seed)
    loss = Trace_ELBO().differentiable_loss(bernoulli_model, bernoulli_guide, y)
    log_p = torch.log(t(0.3) if z else t(0.7)) + normal_logpdf(y, 2 * z, 1.0)
    log_q = math.log(p if z else 1 - p)
    torch.testing.assert_close(loss, -(log_p - log_q))
    dlogq_dp = z / p - (1 - z) / (1 - p)
    # the leaf of p is logit(p): dp/dleaf = p (1 - p)
    torch.testing.assert_close(leaf_grads(loss)["p"], -(log_p - log_q) * dlogq_dp * p * (1 - p))


def plate_model(y, subsample_size=None):
    loc = pyro.sample("loc", dist.Normal(t(0.0), t(2.0)))
    with pyro.plate("data", len(y), subsample_size=subsample_size) as idx:
        z = pyro.sample("z", dist.Bernoulli(t(0.4)))
        pyro.sample("obs", dist.Normal(loc + 2 * z, t(1.0)), obs=y[idx])


def plate_guide(y, subsample_size=None):
    m = pyro.param("m", t(0.2))
    pyro.sample("loc", dist.Normal(m, t(0.5)))
    p = pyro.param("p", torch.linspace(0.2, 0.8, len(y), dtype=F64))
    p = p.clamp(0.05, 0.95)
    with pyro.plate("data", len(y), subsample_size=subsample_size) as idx:
        pyro.sample("z", dist.Bernoulli(p[idx]))


@pytest.mark.parametrize("subsample_size", [None, 3])
def test_score_function_is_rao_blackwellized_over_the_plate(subsample_size):
    """Each z_i's score is weighted by the global cost plus its own element's cost only,
    with the subsampling scale on the local terms (not on the score)."""
    y = t([0.3, -1.2, 2.0, 0.7, 1.1])
    n = len(y)
    tr = draw(plate_guide, 4, y, subsample_size)
    idx = tr.nodes["data"]["value"] if subsample_size else torch.arange(n)
    loc, z = tr.nodes["loc"]["value"].detach(), tr.nodes["z"]["value"]
    scale = n / len(idx)
    p = torch.linspace(0.2, 0.8, n, dtype=F64)[idx]
    pyro.set_rng_seed(4)
    loss = Trace_ELBO().differentiable_loss(plate_model, plate_guide, y, subsample_size)

    global_cost = normal_logpdf(loc, 0.0, 2.0) - normal_logpdf(loc, 0.2, 0.5)
    local_cost = (
        torch.where(z > 0, t(0.4), t(0.6)).log()
        + normal_logpdf(y[idx], loc + 2 * z, 1.0)
        - torch.where(z > 0, p, 1 - p).log()
    )
    torch.testing.assert_close(loss, -(global_cost + scale * local_cost.sum()))
    dlogq_dp = z / p - (1 - z) / (1 - p)
    expected = torch.zeros(n, dtype=F64)
    expected[idx] = -(global_cost + scale * local_cost) * dlogq_dp
    torch.testing.assert_close(leaf_grads(loss)["p"], expected)


def test_mixed_guide_gives_pathwise_and_score_function_terms_together():
    """Reparameterized ``loc`` and Bernoulli ``z`` in one guide: the gradient of ``m`` is purely
    pathwise, since the score-function term of ``z`` weights ``z``'s score by detached costs."""
    y = t([0.3, -1.2, 2.0])
    tr = draw(plate_guide, 5, y)
    loc, z = tr.nodes["loc"]["value"].detach(), tr.nodes["z"]["value"]
    pyro.set_rng_seed(5)
    grads = leaf_grads(Trace_ELBO().differentiable_loss(plate_model, plate_guide, y))
    # pathwise: d/dloc [log p(loc) + sum log p(y | loc, z)], the guide's log q(loc) contributes 0
    g = -loc / 4.0 + (y - loc - 2 * z).sum()
    torch.testing.assert_close(grads["m"], -g)


# ---- particles ---------------------------------------------------------------------------


def test_looped_particles_average_single_particle_losses_and_gradients():
    guide = make_guide()
    pyro.set_rng_seed(6)
    singles = [Trace_ELBO().differentiable_loss(model, guide) for _ in range(3)]
    expected = sum(singles) / 3
    expected_grads = leaf_grads(expected)
    pyro.set_rng_seed(6)
    loss = Trace_ELBO(num_particles=3).differentiable_loss(model, guide)
    torch.testing.assert_close(loss, expected)
    for name, grad in leaf_grads(loss).items():
        torch.testing.assert_close(grad, expected_grads[name])


@pytest.mark.parametrize("elbo_class", [Trace_ELBO, TraceMeanField_ELBO])
def test_vectorized_particles_average_the_closed_form_over_the_drawn_particles(elbo_class):
    k, m, s = 5, 0.3, 0.7
    guide = make_guide()
    with_particles = pyro.plate("num_particles_vectorized", k, dim=-2)(guide)
    z = draw(with_particles, 7).nodes["z"]["value"].detach()
    assert z.shape == (k, 1)
    z = z.squeeze(-1)
    pyro.set_rng_seed(7)
    elbo = elbo_class(num_particles=k, vectorize_particles=True, max_plate_nesting=1)
    loss = elbo.differentiable_loss(model, guide)
    eps = (z - m) / s
    g_obs = ((Y - z[:, None]) / SIGMA**2).sum(-1)
    if elbo_class is Trace_ELBO:
        losses = torch.stack([-(log_joint(zi) - normal_logpdf(zi, m, s)) for zi in z])
        g = g_obs - (z - MU0) / SIGMA0**2
        dm, ds = -g, -g * eps - 1 / s
    else:
        kl = math.log(SIGMA0 / s) + (s**2 + (m - MU0) ** 2) / (2 * SIGMA0**2) - 0.5
        losses = torch.stack([-normal_logpdf(Y, zi, SIGMA).sum() + kl for zi in z])
        dm, ds = -g_obs + (m - MU0) / SIGMA0**2, -g_obs * eps + s / SIGMA0**2 - 1 / s
    torch.testing.assert_close(loss, losses.mean())
    grads = leaf_grads(loss)
    torch.testing.assert_close(grads["m"], dm.mean())
    torch.testing.assert_close(grads["s"], s * ds.mean())


def test_vectorized_particles_guess_max_plate_nesting():
    guide = make_guide()
    elbo = Trace_ELBO(num_particles=4, vectorize_particles=True)
    loss = elbo.differentiable_loss(model, guide)
    assert elbo.max_plate_nesting == 2  # the data plate plus the particle plate
    assert loss.shape == ()


def test_num_particles_must_be_a_positive_int():
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match="num_particles"):
            Trace_ELBO(num_particles=bad)


# ---- scaling: KL annealing, beta-VAE -----------------------------------------------------


def scaled_model(y, beta):
    with poutine.scale(scale=beta):
        z = pyro.sample("z", dist.Normal(t(MU0), t(SIGMA0)))
    with pyro.plate("data", len(y)):
        pyro.sample("obs", dist.Normal(z, t(SIGMA)), obs=y)


def scaled_guide(y, beta):
    m = pyro.param("m", t(0.3))
    s = pyro.param("s", t(0.7), constraint=dist.constraints.positive)
    with poutine.scale(scale=beta):
        pyro.sample("z", dist.Normal(m, s))


@pytest.mark.parametrize("beta", [0.2, 4.0, t(0.05), torch.tensor(2.5)], ids=str)
def test_scale_multiplies_the_latent_terms_of_trace_elbo(beta):
    """-loss = log p(y | z) + beta (log p(z) - log q(z)) at the same sample, and so for grads."""
    z = draw(scaled_guide, 8, Y, beta).nodes["z"]["value"].detach()
    pyro.set_rng_seed(8)
    loss = Trace_ELBO().differentiable_loss(scaled_model, scaled_guide, Y, beta)
    b = float(beta)
    observed = normal_logpdf(Y, z, SIGMA).sum()
    latent = normal_logpdf(z, MU0, SIGMA0) - normal_logpdf(z, 0.3, 0.7)
    torch.testing.assert_close(loss, -(observed + b * latent))
    eps = (z - 0.3) / 0.7
    g_obs, g_prior = ((Y - z) / SIGMA**2).sum(), -(z - MU0) / SIGMA0**2
    grads = leaf_grads(loss)
    torch.testing.assert_close(grads["m"], -(g_obs + b * g_prior))
    torch.testing.assert_close(grads["s"], 0.7 * (-(g_obs + b * g_prior) * eps - b / 0.7))


@pytest.mark.parametrize("beta", [0.2, 4.0, t(0.05)], ids=str)
def test_scale_multiplies_the_analytic_kl_of_trace_mean_field_elbo(beta):
    z = draw(scaled_guide, 9, Y, beta).nodes["z"]["value"].detach()
    pyro.set_rng_seed(9)
    loss = TraceMeanField_ELBO().differentiable_loss(scaled_model, scaled_guide, Y, beta)
    kl = math.log(SIGMA0 / 0.7) + (0.7**2 + (0.3 - MU0) ** 2) / (2 * SIGMA0**2) - 0.5
    torch.testing.assert_close(loss, -normal_logpdf(Y, z, SIGMA).sum() + float(beta) * kl)


def test_annealing_with_a_tensor_that_changes_each_step_scales_each_step():
    """The scale is read afresh at every evaluation (no caching across steps)."""
    values = []
    for i, beta in enumerate(torch.linspace(0.1, 1.0, 4)):
        z = draw(scaled_guide, 10 + i, Y, beta).nodes["z"]["value"].detach()
        pyro.set_rng_seed(10 + i)
        loss = Trace_ELBO().loss(scaled_model, scaled_guide, Y, beta)
        observed = normal_logpdf(Y, z, SIGMA).sum()
        latent = normal_logpdf(z, MU0, SIGMA0) - normal_logpdf(z, 0.3, 0.7)
        values.append((loss, -float(observed + beta * latent)))
    for got, expected in values:
        assert got == pytest.approx(expected, rel=1e-12)


def test_custom_annealed_loss_scales_only_the_named_latents():
    guide = make_guide()
    z = draw(guide, 11).nodes["z"]["value"].detach()
    pyro.set_rng_seed(11)
    loss = annealed_elbo(pyro)(model, guide, annealing_factor=0.3, latents_to_anneal=["z"])
    latent = normal_logpdf(z, MU0, SIGMA0) - normal_logpdf(z, 0.3, 0.7)
    torch.testing.assert_close(loss, -(normal_logpdf(Y, z, SIGMA).sum() + 0.3 * latent))
    pyro.set_rng_seed(11)
    scaled = Trace_ELBO().differentiable_loss(scaled_model, scaled_guide, Y, 0.3)
    torch.testing.assert_close(loss, scaled)
    expected = leaf_grads(scaled)
    for name, grad in leaf_grads(loss).items():
        torch.testing.assert_close(grad, expected[name])


# ---- model and guide must match ----------------------------------------------------------


def test_a_model_latent_missing_from_the_guide_warns_naming_it():
    def model_two():
        pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("w", dist.Normal(0.0, 1.0))
        pyro.sample("v", dist.Normal(0.0, 1.0))

    def guide_one():
        pyro.sample("z", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))

    with pytest.warns(UserWarning, match=r"\['v', 'w'\]"):
        Trace_ELBO().loss(model_two, guide_one)


def test_a_guide_site_missing_from_the_model_is_an_error_naming_it():
    def model_one():
        pyro.sample("z", dist.Normal(0.0, 1.0))

    def guide_extra():
        pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("typo_site", dist.Normal(0.0, 1.0))

    for elbo in (Trace_ELBO(), TraceMeanField_ELBO()):
        with pytest.raises(ValueError, match="typo_site"):
            elbo.loss(model_one, guide_extra)


def test_an_auxiliary_guide_site_may_be_absent_from_the_model():
    def model_one():
        pyro.sample("z", dist.Normal(0.0, 1.0))

    def guide_aux():
        u = pyro.sample("u", dist.Normal(0.0, 1.0), infer={"is_auxiliary": True})
        pyro.sample("z", dist.Normal(u, 1.0))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isfinite(Trace_ELBO().loss(model_one, guide_aux))


def test_matching_model_and_guide_warn_about_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trace_ELBO().loss(model, make_guide())
        TraceMeanField_ELBO().loss(model, make_guide())


def test_trace_mean_field_elbo_rejects_a_non_reparameterized_guide_site():
    with pytest.raises(NotImplementedError, match="'z'"):
        TraceMeanField_ELBO().loss(model, make_guide(NonReparamNormal))
