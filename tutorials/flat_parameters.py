# %% [markdown]
# # Parameters as one flat vector
#
# Many tools want the parameters as a single vector: Hessians and Newton steps, `torch.vmap`
# over many parameter settings, `torch.optim.LBFGS`, `scipy.optimize.minimize`. PyTorch's
# `parameters_to_vector` looks like the answer, but it copies: the loss is not a function of
# the copy, so autograd cannot differentiate with respect to it. This tutorial:
#
# 1. shows the plain-PyTorch attempt and its error;
# 2. `ravel`: named tensors to one leaf vector and views back, the graph kept;
# 3. `FlatView`: an `nn.Module` run from a vector (a Hessian, one exact Newton step, `vmap`);
# 4. `ParamVector`: a model's `param` statements read from a vector (MAP by L-BFGS, and a
#    Laplace approximation that is exact for a linear-Gaussian model);
# 5. the same inside a model trained with `SVI`: the ELBO as a function of one vector.
#
# Every claim the text makes is checked by an `assert`, so the script doubles as a test.
# Set the environment variable `MINIPROB_FAST` to any non-empty value to run with few steps
# (a few seconds, as CI does); figures go to `MINIPROB_OUT` (default `tutorials/out/`).

# %%
import os
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch.nn.utils import parameters_to_vector, vector_to_parameters  # noqa: E402

import miniprob as pyro  # noqa: E402
import miniprob.distributions as dist  # noqa: E402
from miniprob import poutine  # noqa: E402
from miniprob.distributions import constraints  # noqa: E402
from miniprob.flat import FlatView, ParamVector, ravel  # noqa: E402
from miniprob.infer import SVI, Trace_ELBO  # noqa: E402
from miniprob.optim import Adam  # noqa: E402

FAST = bool(os.environ.get("MINIPROB_FAST"))
HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
OUT = Path(os.environ.get("MINIPROB_OUT") or HERE / "out")
OUT.mkdir(parents=True, exist_ok=True)
# torch.func.hessian loads torch's forward-AD decompositions, which still use torch.jit.script.
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")
torch.set_default_dtype(torch.float64)  # closed-form comparisons to 1e-8


def steps(fast: int, full: int) -> int:
    """How many steps a section runs: few in fast mode, more otherwise."""
    return fast if FAST else full


print(f"mode: {'fast' if FAST else 'full'}; figures go to {OUT}")

# %% [markdown]
# ## 1. The plain-PyTorch attempt
#
# A linear regression as an `nn.Linear`. We want the gradient of the loss with respect to
# all parameters as one vector.

# %%
torch.manual_seed(0)
N, D = 100, 3
w_true, b_true = torch.tensor([1.0, -2.0, 0.5]), 0.3
X = torch.randn(N, D)
y = X @ w_true + b_true + 0.5 * torch.randn(N)
net = torch.nn.Linear(D, 1)


def mse(prediction):
    return (prediction.squeeze(-1) - y).pow(2).mean()


errors = []
vector = parameters_to_vector(net.parameters()).requires_grad_()
try:
    torch.autograd.grad(mse(net(X)), vector)
except RuntimeError as e:
    errors.append(e)
vector_to_parameters(vector, net.parameters())  # writes .data: the graph is cut here too
try:
    torch.autograd.grad(mse(net(X)), vector)
except RuntimeError as e:
    errors.append(e)
for e in errors:
    print(f"{type(e).__name__}: {str(e).split('.')[0]}")
assert len(errors) == 2 and all("not have been used in the graph" in str(e) for e in errors)

# %% [markdown]
# ## 2. `ravel`: the vector first, the tensors as views of it
#
# `ravel(named_tensors)` returns a fresh leaf vector and `unravel`, which maps any vector of
# the right length back to named views with the original shapes. Whatever is computed from
# `unravel(v)` is a function of `v`: gradients and Hessians work. For a quadratic
# `0.5 z'Az + b'z` of the concatenated tensors, the Hessian is `A` and the gradient `Az + b`.

# %%
vector, unravel = ravel({"weight": torch.zeros(2, 2), "bias": torch.zeros(2)})
M = torch.randn(6, 6)
A, b = M @ M.T + torch.eye(6), torch.randn(6)


def quadratic(v):
    parts = unravel(v)
    z = torch.cat([parts["weight"].reshape(-1), parts["bias"]])
    return 0.5 * z @ A @ z + b @ z


point = torch.randn(6)
hessian = torch.func.hessian(quadratic)(point)
(gradient,) = torch.autograd.grad(quadratic(point.requires_grad_()), point)
print(
    f"Hessian error {(hessian - A).abs().max():.1e}, gradient error "
    f"{(gradient - (A @ point.detach() + b)).abs().max():.1e}"
)
assert torch.allclose(hessian, A) and torch.allclose(gradient, A @ point.detach() + b)
print({name: tuple(t.shape) for name, t in unravel(torch.zeros(5, 6)).items()})  # batch dim

# %% [markdown]
# ## 3. `FlatView`: a module run from a vector
#
# `FlatView(net).view(x, vector=v)` runs the module with its parameters read from `v`
# (through `torch.func.functional_call`). The mean squared error of a linear model is a
# quadratic in `[weight, bias]`, with Hessian `2/N [X 1]'[X 1]`, so one Newton step from any
# starting point lands on the least-squares solution. `write_back()` stores the result in the
# module; `torch.vmap` evaluates the loss for many parameter vectors in one call.

# %%
flat = FlatView(net)


def loss_of(v):
    return mse(flat.view(X, vector=v))


design = torch.cat([X, torch.ones(N, 1)], dim=1)
hessian = torch.func.hessian(loss_of)(flat.vector.detach())
assert torch.allclose(hessian, 2 / N * design.T @ design)
(gradient,) = torch.autograd.grad(loss_of(flat.vector), flat.vector)
with torch.no_grad():
    flat.vector -= torch.linalg.solve(hessian, gradient)
flat.write_back()
least_squares = torch.linalg.lstsq(design, y.unsqueeze(-1)).solution.squeeze(-1)
print(f"after one Newton step: weight {net.weight.detach().tolist()}, bias {net.bias.item():.4f}")
print(f"least squares:         {least_squares.tolist()}")
assert torch.allclose(torch.cat([net.weight.reshape(-1), net.bias]), least_squares, atol=1e-10)

candidates = least_squares + 0.3 * torch.randn(steps(200, 5000), D + 1)
losses = torch.vmap(loss_of)(candidates)
assert torch.allclose(losses[:5], torch.stack([loss_of(v) for v in candidates[:5]]))
assert losses.min() >= loss_of(least_squares) - 1e-12
print(f"vmap: {len(candidates)} losses in one call, none below the least-squares loss")

# %% [markdown]
# ## 4. `ParamVector`: a model's params as one vector
#
# A Bayesian linear regression whose weights are a `param` (so the model's log joint is a
# function of the parameters), with a normal prior added as a `factor`. `ParamVector()` takes
# the current param store's unconstrained parameters; `as_function(f)` runs `f` with every
# `param` statement reading its value from a given vector (through `poutine.substitute`,
# with each parameter's constraint transform applied). So the negative log joint becomes a
# function of one tensor: L-BFGS finds the MAP, `torch.func.hessian` the Laplace
# approximation. For this linear-Gaussian model both are exact: the posterior mean and
# covariance are known in closed form.

# %%
NOISE, PRIOR = 0.5, 2.0


def regression(X, y):
    w = pyro.param("w", torch.zeros(D))
    b = pyro.param("b", torch.tensor(0.0))
    pyro.factor("prior", dist.Normal(0.0, PRIOR).log_prob(torch.cat([w, b[None]])).sum())
    with pyro.plate("data", len(X)):
        pyro.sample("obs", dist.Normal(X @ w + b, NOISE), obs=y)


def negative_log_joint(X, y):
    return -poutine.trace(regression).get_trace(X, y).log_prob_sum()


def lbfgs(vector, loss, *args, max_iter):
    optimizer = torch.optim.LBFGS(
        [vector],
        max_iter=max_iter,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        value = loss(vector, *args)
        value.backward()
        return value

    optimizer.step(closure)


pyro.clear_param_store()
regression(X, y)  # creates the params
params = ParamVector()
print(f"params {params.names}, vector of {params.vector.numel()}")
loss = params.as_function(negative_log_joint)
lbfgs(params.vector, loss, X, y, max_iter=100)
laplace_covariance = torch.linalg.inv(torch.func.hessian(loss)(params.vector.detach(), X, y))

precision = design.T @ design / NOISE**2 + torch.eye(D + 1) / PRIOR**2
exact_covariance = torch.linalg.inv(precision)
exact_mean = exact_covariance @ design.T @ y / NOISE**2
map_estimate = params.vector.detach().clone()
print(f"MAP    {map_estimate.tolist()}")
print(f"exact  {exact_mean.tolist()}")
assert torch.allclose(params.vector, exact_mean, atol=1e-8)
assert torch.allclose(laplace_covariance, exact_covariance, atol=1e-10)
params.write_back()
assert torch.allclose(pyro.param("w"), exact_mean[:D], atol=1e-8)

fig, ax = plt.subplots(figsize=(5, 4))
for label, center, cov, style in (
    ("Laplace", map_estimate, laplace_covariance, "-"),
    ("exact", exact_mean, exact_covariance, ":"),
):
    angles = torch.linspace(0, 2 * torch.pi, 100)
    circle = torch.stack([angles.cos(), angles.sin()])
    ellipse = torch.linalg.cholesky(cov[:2, :2]) @ circle * 2 + center[:2, None]
    ax.plot(ellipse[0], ellipse[1], style, lw=2, label=f"{label} (2 sd)")
ax.plot(*w_true[:2].tolist(), "k+", ms=12, label="true weights")
ax.set_xlabel("w[0]")
ax.set_ylabel("w[1]")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "flat_parameters_laplace.png")
plt.close(fig)

# %% [markdown]
# ## 5. Inside a model trained with SVI
#
# Now the weights are latent (`sample` sites) and a mean-field normal guide is fit by `SVI`.
# For a Gaussian posterior with precision `P`, the best mean-field Gaussian is known: the
# exact posterior mean, and standard deviations `1 / sqrt(P_ii)`.
#
# After SVI, `ParamVector` turns the ELBO itself into a function of one vector. With the
# random draws fixed (`poutine.seed`) and many particles (vectorized), the estimate is a
# smooth deterministic function, so L-BFGS can finish the optimization in a few iterations.
# SVI with a constant learning rate stops within one posterior standard deviation of the
# exact mean; L-BFGS on the flat vector within a fifth of one, with the mean-field scales
# within 5% (15% with the fewer particles of fast mode).


# %%
def latent_regression(X, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(D + 1), PRIOR).to_event(1))
    with pyro.plate("data", len(X)):
        pyro.sample("obs", dist.Normal((design * w).sum(-1), NOISE), obs=y)


def guide(X, y):
    loc = pyro.param("loc", torch.zeros(D + 1))
    scale = pyro.param("scale", 0.1 * torch.ones(D + 1), constraint=constraints.positive)
    pyro.sample("w", dist.Normal(loc, scale).to_event(1))


pyro.clear_param_store()
pyro.set_rng_seed(0)
svi = SVI(latent_regression, guide, Adam({"lr": 0.02}), Trace_ELBO())
svi_losses = svi.run(steps(300, 3000), X, y, progress=False)
svi_loc, svi_scale = pyro.param("loc").detach().clone(), pyro.param("scale").detach().clone()

params = ParamVector()
elbo = Trace_ELBO(num_particles=steps(256, 4096), vectorize_particles=True)
fixed_draws_loss = params.as_function(poutine.seed(elbo.differentiable_loss, rng_seed=0))
before = fixed_draws_loss(params.vector, latent_regression, guide, X, y).item()
lbfgs(params.vector, fixed_draws_loss, latent_regression, guide, X, y, max_iter=steps(20, 50))
after = fixed_draws_loss(params.vector, latent_regression, guide, X, y).item()
params.write_back()
fitted = params.constrained()

mean_field_scale = precision.diagonal().rsqrt()
for name, loc_, scale_ in (
    ("SVI", svi_loc, svi_scale),
    ("+L-BFGS", fitted["loc"], fitted["scale"]),
):
    print(
        f"{name:>8}: loc error {(loc_ - exact_mean).abs().max():.4f}, "
        f"scale error {((scale_ / mean_field_scale) - 1).abs().max():.1%}"
    )
print(f"fixed-draw ELBO loss: {before:.4f} after SVI, {after:.4f} after L-BFGS")
assert after <= before
posterior_sd = exact_covariance.diagonal().sqrt()
assert ((svi_loc - exact_mean).abs() < posterior_sd).all()
assert ((fitted["loc"] - exact_mean).abs() < 0.2 * posterior_sd).all()
assert ((fitted["scale"] / mean_field_scale - 1).abs() < (0.15 if FAST else 0.05)).all()

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(svi_losses)
ax.axhline(after, color="k", ls=":", label="L-BFGS on the flat vector (fixed draws)")
ax.set_xlabel("SVI step")
ax.set_ylabel("loss (-ELBO)")
ax.set_yscale("log")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "flat_parameters_svi.png")
plt.close(fig)
print("done")
