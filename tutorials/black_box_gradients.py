# %% [markdown]
# # Functions autograd cannot see
#
# Autograd differentiates what it records: PyTorch operations on tensors. A simulator written
# in NumPy, a formula typed as text and run by `eval`, a call into compiled code: their
# results arrive as new tensors with no history, and the gradient stops there. This tutorial:
#
# 1. shows a NumPy simulator inside a PyTorch loss: the two errors plain PyTorch gives, and
#    the usual hand-written `torch.autograd.Function`, which trains one input and silently
#    freezes the network upstream of another;
# 2. `black_box`: finite-difference gradients for every tensor input, the accuracy of
#    central, forward and SPSA differences against an autograd twin, one batched call per
#    backward pass with `vectorized=True`, and `torch.autograd.gradcheck`;
# 3. the same simulator inside a model trained with `SVI`: from noisy observations, the
#    posterior of its frequency and damping matches the exact one (computed on a grid) and
#    covers the true values.
#
# Every claim the text makes is checked by an `assert`, so the script doubles as a test.
# Set the environment variable `MINIPROB_FAST` to any non-empty value to run with few steps
# (a few seconds, as CI does); figures go to `MINIPROB_OUT` (default `tutorials/out/`).

# %%
import math
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import miniprob as pyro  # noqa: E402
import miniprob.distributions as dist  # noqa: E402
from miniprob import black_box  # noqa: E402
from miniprob.distributions import constraints  # noqa: E402
from miniprob.infer import SVI, Trace_ELBO  # noqa: E402
from miniprob.optim import ClippedAdam  # noqa: E402

FAST = bool(os.environ.get("MINIPROB_FAST"))
HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
OUT = Path(os.environ.get("MINIPROB_OUT") or HERE / "out")
OUT.mkdir(parents=True, exist_ok=True)
torch.set_default_dtype(torch.float64)  # finite differences are computed in float64


def steps(fast: int, full: int) -> int:
    """How many steps a section runs: few in fast mode, more otherwise."""
    return fast if FAST else full


print(f"mode: {'fast' if FAST else 'full'}; figures go to {OUT}")

# %% [markdown]
# ## 1. A NumPy simulator in a PyTorch loss
#
# The simulator is a damped, driven oscillator, `x'' + 2 zeta omega x' + omega^2 x = u(t)`,
# integrated by a NumPy loop (semi-implicit Euler) that records the position every 0.2
# seconds. Its inputs: `theta = (omega, zeta)`, the frequency and the damping; the initial
# position and velocity of each experiment, shape `(..., experiments, 2)`; and the driving
# force `u`, one value per integration step. It returns the positions, shape
# `(..., experiments, times)`.
#
# Think of `oscillator` as code you cannot rewrite. We keep its arithmetic in `integrate`
# only so that this tutorial can build an *autograd twin*, the same loop run on torch
# tensors, whose exact gradients check every finite-difference gradient below.

# %%
DT, NUM_STEPS, EVERY = 0.1, 100, 2
TIMES = DT * EVERY * torch.arange(1, NUM_STEPS // EVERY + 1)


def integrate(theta, state0, force, stack):
    """Positions of the oscillator, for arrays of any library that `stack` belongs to."""
    omega, zeta = theta[..., 0:1], theta[..., 1:2]
    x, v = state0[..., 0], state0[..., 1]
    positions = []
    for k in range(NUM_STEPS):
        v = v + DT * (force[..., k : k + 1] - 2 * zeta * omega * v - omega**2 * x)
        x = x + DT * v
        if (k + 1) % EVERY == 0:
            positions.append(x)
    return stack(positions, -1)


def oscillator(theta, state0, force):
    """The NumPy simulator: converts its inputs to arrays and returns an array."""
    return integrate(np.asarray(theta), np.asarray(state0), np.asarray(force), np.stack)


def oscillator_twin(theta, state0, force):
    """The same arithmetic on torch tensors, so autograd sees every operation."""
    return integrate(theta, state0, force, torch.stack)


# %% [markdown]
# The task: eight experiments start from initial states that a small network, the
# *encoder*, computes from three sensor readings each. From the observed positions we want
# to learn both the oscillator's `theta` and the encoder's weights. In plain PyTorch:

# %%
torch.manual_seed(0)
NUM_EXPERIMENTS, NOISE = 8, 0.02
features = torch.randn(NUM_EXPERIMENTS, 3)
true_encoder = torch.nn.Linear(3, 2)
true_theta = torch.tensor([1.5, 0.1])
force = 0.3 * torch.sin(0.7 * DT * torch.arange(NUM_STEPS))
with torch.no_grad():
    clean = oscillator_twin(true_theta, true_encoder(features), force)
observed = clean + NOISE * torch.randn_like(clean)


def fresh_start():
    """The encoder and theta before training, the same every time this is called."""
    torch.manual_seed(1)
    return torch.nn.Linear(3, 2), torch.tensor([1.3, 0.2], requires_grad=True)


encoder, theta = fresh_start()
errors = []
try:
    predicted = torch.as_tensor(oscillator(theta, encoder(features), force))
except RuntimeError as e:
    errors.append(e)
print(f"1st attempt: {type(errors[0]).__name__}: {errors[0]}")
assert "Can't call numpy() on Tensor that requires grad" in str(errors[0])

# The error suggests .detach(); the simulator then runs, and the loss has no history.
predicted = torch.as_tensor(oscillator(theta.detach(), encoder(features).detach(), force))
loss = (predicted - observed).pow(2).mean()
try:
    loss.backward()
except RuntimeError as e:
    errors.append(e)
print(f"2nd attempt: {type(errors[1]).__name__}: {errors[1]}")
assert "element 0 of tensors does not require grad" in str(errors[1])

# %% [markdown]
# The usual repair is a hand-written `torch.autograd.Function` whose backward pass bumps
# each input by a small step and measures the change: forward differences. Written for the
# parameters one has in mind, it differentiates `theta` only and returns `None` for the
# initial states ("they come from data"). Its gradient for `theta` is fine (a relative
# error near 1e-6 against the twin). But PyTorch accepts the `None` without a word: the
# encoder, which produced those states, simply gets no gradient.


# %%
class Oscillator(torch.autograd.Function):
    @staticmethod
    def forward(ctx, theta, state0, force):
        ctx.save_for_backward(theta, state0, force)
        return torch.as_tensor(oscillator(theta.detach(), state0.detach(), force.detach()))

    @staticmethod
    def backward(ctx, grad_output):
        theta, state0, force = (t.detach() for t in ctx.saved_tensors)
        base = torch.as_tensor(oscillator(theta, state0, force))
        grad_theta = torch.zeros_like(theta)
        for j in range(len(theta)):
            bumped = theta.clone()
            bumped[j] += 1e-6
            slope = (torch.as_tensor(oscillator(bumped, state0, force)) - base) / 1e-6
            grad_theta[j] = (grad_output * slope).sum()
        return grad_theta, None, None


def relative_error(estimate, exact):
    return ((estimate - exact).norm() / exact.norm()).item()


def twin_gradients(encoder, theta):
    """Exact gradients of the loss for theta and the encoder's weights, by autograd."""
    loss = (oscillator_twin(theta, encoder(features), force) - observed).pow(2).mean()
    return torch.autograd.grad(loss, [theta, encoder.weight, encoder.bias])


encoder, theta = fresh_start()
exact = twin_gradients(encoder, theta)
loss = (Oscillator.apply(theta, encoder(features), force) - observed).pow(2).mean()
loss.backward()
hand_error = relative_error(theta.grad, exact[0])
print(f"hand-written: theta.grad relative error {hand_error:.1e}")
print(f"hand-written: encoder.weight.grad is {encoder.weight.grad}")
assert hand_error < 1e-5
assert encoder.weight.grad is None and encoder.bias.grad is None

# %% [markdown]
# An optimizer skips parameters whose gradient is `None`, so training runs, the loss goes
# down (through `theta`), and the encoder never moves: a silent failure. Section 2 trains
# both versions side by side.
#
# ## 2. `black_box`: gradients for every tensor input
#
# `black_box(fn)` wraps `fn` in an autograd function whose backward pass estimates the
# vector-Jacobian product by finite differences, for every positional tensor argument that
# requires grad. `fn` receives detached float64 tensors, so `np.asarray` just works, and
# may return a NumPy array. One line, and the encoder's gradients agree with the twin's:

# %%
simulator = black_box(oscillator)
encoder, theta = fresh_start()
exact = twin_gradients(encoder, theta)
loss = (simulator(theta, encoder(features), force) - observed).pow(2).mean()
loss.backward()
estimates = (theta.grad, encoder.weight.grad, encoder.bias.grad)
for name, estimate, value in zip(
    ["theta", "encoder.weight", "encoder.bias"], estimates, exact, strict=True
):
    print(f"black_box: {name:>14}.grad relative error {relative_error(estimate, value):.1e}")
    assert relative_error(estimate, value) < 1e-7

# %% [markdown]
# ### Central, forward or SPSA?
#
# Take all three inputs as requiring grad: 2 + 16 + 100 = 118 numbers. For each method, the
# table gives the simulator calls one backward pass makes (counted by a wrapper) and the
# relative error against the twin:
#
# - `"central"` (the default) evaluates `f(x + h) - f(x - h)` for every input: 2n calls,
#   error O(h^2); with its default step the relative error is below 1e-8 here.
# - `"forward"` evaluates `f(x + h) - f(x)`: half the calls, error O(h), here roughly a
#   hundred times larger; its one-sided steps also stay on one side of a domain boundary.
# - `"spsa"` moves all inputs at once along random +-1 directions: 2 calls per direction
#   whatever n is. The estimate is unbiased but noisy: with 8 directions and 118 inputs
#   its error is larger than the gradient itself, and more directions shrink it like one
#   over their square root (64 times the directions, about 8 times less error). It pays
#   when n is large and the optimizer averages noise anyway, as stochastic gradient
#   descent does.


# %%
class Counted:
    """A function that counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args):
        self.calls += 1
        return self.fn(*args)


state0 = true_encoder(features).detach()
weights = torch.randn_like(clean)  # the vector of the vector-Jacobian product
inputs = [t.clone().requires_grad_() for t in (true_theta, state0, force)]


def flat(grads):
    return torch.cat([g.flatten() for g in grads])


exact = flat(torch.autograd.grad(oscillator_twin(*inputs), inputs, weights))


def gradient_of(**options):
    """The finite-difference vector-Jacobian product, its simulator calls and its time."""
    counted = Counted(oscillator)
    start = time.perf_counter()
    grads = torch.autograd.grad(black_box(counted, **options)(*inputs), inputs, weights)
    seconds = time.perf_counter() - start
    return flat(grads), counted.calls, seconds


torch.manual_seed(2)
table, estimates = {}, {}
for label, options in [
    ("central", {}),
    ("forward", {"method": "forward"}),
    ("spsa, 8 directions", {"method": "spsa"}),
    ("spsa, 512 directions", {"method": "spsa", "num_directions": 512, "vectorized": True}),
]:
    estimates[label], calls, seconds = gradient_of(**options)
    table[label] = (relative_error(estimates[label], exact), calls, seconds)
print(f"{'method':>21} {'calls':>6} {'seconds':>8} {'relative error':>15}")
for label, (error, calls, seconds) in table.items():
    print(f"{label:>21} {calls:>6} {seconds:>8.3f} {error:>15.1e}")
n = sum(t.numel() for t in inputs)
assert n == 118
assert table["central"][1] == 2 * n + 1 and table["forward"][1] == n + 1  # + the forward pass
assert table["spsa, 8 directions"][1] == 2 * 8 + 1
assert table["central"][0] < 1e-8
assert 20 < table["forward"][0] / table["central"][0] < 500
assert table["spsa, 8 directions"][0] > 1
assert 4 < table["spsa, 8 directions"][0] / table["spsa, 512 directions"][0] < 16

# %% [markdown]
# The SPSA row with 512 directions made only two calls: it was `vectorized`.
#
# ### `vectorized=True`: one call per backward pass
#
# A simulator written with NumPy broadcasting can take a batch of inputs at once: every
# tensor argument gets a leading batch dimension, and it returns one. Our `integrate` indexes
# with `...`, so it already can. With `vectorized=True`, `black_box` stacks all perturbed
# inputs of a backward pass into one batch: one call instead of 2n, in a fraction of the
# time, and the same gradient up to rounding (a relative difference below 1e-9).

# %%
vectorized_estimate, vectorized_calls, _ = gradient_of(vectorized=True)
# the best of five: one short call is easily delayed by whatever else the machine does
vectorized_seconds = min(gradient_of(vectorized=True)[2] for _ in range(5))
_, looped_calls, looped_seconds = table["central"]
print(f"looped:     {looped_calls} calls, {looped_seconds:.3f} s")
print(f"vectorized: {vectorized_calls} calls, {vectorized_seconds:.3f} s")
assert vectorized_calls == 2  # the forward pass, then one batch of 2 * 118 perturbations
difference = relative_error(vectorized_estimate, estimates["central"])
print(f"relative difference between the two gradients: {difference:.1e}")
assert difference < 1e-9
assert vectorized_seconds < looped_seconds / 2

# %% [markdown]
# ### `gradcheck`
#
# `torch.autograd.gradcheck` compares a function's backward pass with its own finite
# differences, in float64. Central differences pass with the default tolerances (here for
# theta and two initial states; the force does not require grad). A formula typed as text
# and run by `eval` passes too: non-tensor arguments, like the text, go through untouched.

# %%
small = (true_theta.clone().requires_grad_(), state0[:2].clone().requires_grad_(), force)
assert torch.autograd.gradcheck(black_box(oscillator, vectorized=True), small)


@black_box
def formula(p, text):
    return eval(text, {"np": np, "p": p.numpy()})


p = torch.tensor([0.4, 1.2], requires_grad=True)
assert torch.autograd.gradcheck(formula, (p, "np.exp(-p[0]) * np.sin(p[1] * p[0])"))
print("gradcheck passed: the simulator, and a formula run by eval")

# %% [markdown]
# ### Training the encoder
#
# Now train `theta` and the encoder with Adam, once through the hand-written `Oscillator`
# and once through `black_box(oscillator, vectorized=True)`. The hand-written version
# leaves the encoder's weights exactly where they started, and its loss stalls far above
# the noise level (`NOISE**2`, the mean squared error of the true curves); the
# `black_box` version reaches the noise level and recovers `theta`.


# %%
def train(simulate, num_steps):
    encoder, theta = fresh_start()
    initial = encoder.weight.detach().clone()
    optimizer = torch.optim.Adam([theta, *encoder.parameters()], lr=0.05)
    losses = []
    for _ in range(num_steps):
        optimizer.zero_grad()
        loss = (simulate(theta, encoder(features), force) - observed).pow(2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, theta.detach(), torch.equal(encoder.weight, initial)


train_steps = steps(100, 400)
hand_losses, hand_theta, hand_frozen = train(Oscillator.apply, train_steps)
box_losses, box_theta, box_frozen = train(black_box(oscillator, vectorized=True), train_steps)
noise_level = (clean - observed).pow(2).mean().item()
print(f"noise level {noise_level:.2e}")
for label, losses, fitted, frozen in [
    ("hand-written", hand_losses, hand_theta, hand_frozen),
    ("black_box", box_losses, box_theta, box_frozen),
]:
    theta_text = ", ".join(f"{v:.4f}" for v in fitted)
    print(f"{label:>12}: loss {losses[-1]:.2e}, theta ({theta_text}), encoder frozen: {frozen}")
assert hand_frozen and not box_frozen
assert hand_losses[-1] < hand_losses[0]  # it trains theta, nothing else
assert hand_losses[-1] > 10 * noise_level
assert box_losses[-1] < 1.5 * noise_level
assert torch.allclose(box_theta, true_theta, atol=0.02)

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(hand_losses, label="hand-written Function (theta only)")
ax.plot(box_losses, label="black_box (every input)")
ax.axhline(noise_level, color="gray", ls=":", label="noise level")
ax.set_xlabel("Adam step")
ax.set_ylabel("mean squared error")
ax.set_yscale("log")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "black_box_training.png")
plt.close(fig)

# %% [markdown]
# ## 3. Inside a model trained with SVI
#
# One experiment with a known start (position 1, at rest, no force), observed at the 40
# recording times with noise of standard deviation 0.05. The model puts log-normal priors on
# the frequency and the damping and calls the wrapped simulator for the mean of the
# observations; the guide is a log-normal for each. `black_box` needs nothing from SVI:
# the samples it receives are tensors that require grad through the guide's parameters.
# With one particle the ELBO gradient is noisy, so the learning rate decays by a factor of
# 50 over the run (`ClippedAdam`'s `lrd`).

# %%
sigma = 0.05
start_state, no_force = torch.tensor([[1.0, 0.0]]), torch.zeros(NUM_STEPS)
omega_prior, zeta_prior = dist.LogNormal(0.0, 0.5), dist.LogNormal(math.log(0.2), 1.0)
torch.manual_seed(3)
data = oscillator_twin(true_theta, start_state, no_force)[0]
data = data + sigma * torch.randn_like(data)
curve_of = black_box(oscillator, vectorized=True)


def model(data):
    omega = pyro.sample("omega", omega_prior)
    zeta = pyro.sample("zeta", zeta_prior)
    curve = curve_of(torch.stack([omega, zeta]), start_state, no_force)[0]
    with pyro.plate("time", len(data)):
        pyro.sample("obs", dist.Normal(curve, sigma), obs=data)


def guide(data):
    for name, guess in [("omega", 1.0), ("zeta", 0.2)]:
        loc = pyro.param(f"{name}_loc", torch.tensor(math.log(guess)))
        scale = pyro.param(f"{name}_scale", torch.tensor(0.01), constraint=constraints.positive)
        pyro.sample(name, dist.LogNormal(loc, scale))


svi_steps = steps(300, 1000)
pyro.clear_param_store()
pyro.set_rng_seed(0)
svi = SVI(model, guide, ClippedAdam({"lr": 0.1, "lrd": 0.02 ** (1 / svi_steps)}), Trace_ELBO())
start = time.perf_counter()
svi_losses = svi.run(svi_steps, data, progress=False)
print(f"SVI: {svi_steps} steps in {time.perf_counter() - start:.1f} s")
guides = {
    name: dist.LogNormal(pyro.param(f"{name}_loc"), pyro.param(f"{name}_scale"))
    for name in ("omega", "zeta")
}

# %% [markdown]
# How good is that posterior? With only two parameters the exact one is within reach: the
# simulator broadcasts, so a single call evaluates the likelihood on a grid of 201 x 121
# values of `(omega, zeta)`, and normalizing prior times likelihood on the grid gives the
# posterior mean and standard deviation (the brute force that SVI replaces when there are
# more parameters). The SVI posterior mean lands within one exact posterior standard
# deviation of the exact mean in the full run (within two in fast mode), its standard
# deviation within a factor of two of the exact one, and each true value lies within three
# exact standard deviations of the exact mean.

# %%
omega_grid, zeta_grid = torch.linspace(1.4, 1.6, 201), torch.linspace(0.07, 0.13, 121)
grid = torch.cartesian_prod(omega_grid, zeta_grid)
curves = torch.as_tensor(oscillator(grid, start_state, no_force))[:, 0]
log_posterior = (
    dist.Normal(curves, sigma).log_prob(data).sum(-1)
    + omega_prior.log_prob(grid[:, 0])
    + zeta_prior.log_prob(grid[:, 1])
)
probabilities = torch.softmax(log_posterior, 0)
exact_mean = probabilities @ grid
exact_sd = (probabilities @ (grid - exact_mean) ** 2).sqrt()
within = 1 if not FAST else 2
print(f"{'':>6} {'SVI mean':>9} {'SVI sd':>8} {'exact mean':>11} {'exact sd':>9} {'true':>6}")
for j, name in enumerate(("omega", "zeta")):
    mean, sd = guides[name].mean.item(), guides[name].stddev.item()
    m, s, truth = exact_mean[j].item(), exact_sd[j].item(), true_theta[j].item()
    print(f"{name:>6} {mean:>9.4f} {sd:>8.4f} {m:>11.4f} {s:>9.4f} {truth:>6}")
    assert abs(mean - m) < within * s
    assert s / 2 < sd < 2 * s
    assert abs(truth - m) < 3 * s

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
t = TIMES.numpy()
axes[0].plot(t, data.numpy(), "k.", label="observations")
with torch.no_grad():
    draws = torch.stack([guides[name].sample((20,)) for name in ("omega", "zeta")], -1)
axes[0].plot(t, oscillator(draws, start_state, no_force)[:, 0].T, "C0", alpha=0.2, lw=1)
axes[0].set_xlabel("time")
axes[0].set_ylabel("position")
axes[0].set_title("observations and 20 posterior curves")
omega_marginal = probabilities.reshape(len(omega_grid), len(zeta_grid)).sum(1)
spacing = (omega_grid[1] - omega_grid[0]).item()
axes[1].plot(omega_grid, omega_marginal / spacing, "k", label="exact (grid)")
with torch.no_grad():
    axes[1].plot(omega_grid, guides["omega"].log_prob(omega_grid).exp(), "C0--", label="SVI")
axes[1].axvline(true_theta[0].item(), color="gray", ls=":", label="true")
axes[1].set_xlim(exact_mean[0] - 6 * exact_sd[0], exact_mean[0] + 6 * exact_sd[0])
axes[1].set_xlabel("omega")
axes[1].set_title("posterior of the frequency")
axes[1].legend()
fig.tight_layout()
fig.savefig(OUT / "black_box_svi.png")
plt.close(fig)
print(f"figures: {OUT / 'black_box_training.png'}, {OUT / 'black_box_svi.png'}")
print("done")
