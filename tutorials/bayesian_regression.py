# %% [markdown]
# # Bayesian regression with autoguides
#
# A linear regression whose weights are random variables, written as a `PyroModule[nn.Linear]`
# (an `nn.Linear` whose weight and bias are `PyroSample` priors), on scikit-learn's bundled
# diabetes data (442 patients, no download). The guide writes itself: an **autoguide** runs
# the model once, finds its latent sites (the weights, the bias, the noise scale) and builds a
# variational distribution over them. We fit three and compare them:
#
# 1. `AutoDiagonalNormal`: independent Normals (in the unconstrained space);
# 2. `AutoMultivariateNormal`: a full-covariance Normal, which can represent the correlation
#    between weights of correlated features;
# 3. `AutoLaplaceApproximation`: the MAP point, then a Normal whose covariance is the inverse
#    Hessian of the negative log joint there.
#
# Then: posterior predictive bands from each (`Predictive`), and the three posteriors side by
# side (`guide.quantiles`). The code is Pyro's: `import miniprob as pyro` is the only change.
#
# Every claim the text makes is checked by an `assert`, so the script doubles as a test.
# Set the environment variable `MINIPROB_FAST` to any non-empty value to run with few steps
# (a few seconds, as CI does); figures go to `MINIPROB_OUT` (default `tutorials/out/`).

# %%
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_diabetes  # noqa: E402
from torch import nn  # noqa: E402

import miniprob as pyro  # noqa: E402
import miniprob.distributions as dist  # noqa: E402
from miniprob.infer import SVI, Predictive, Trace_ELBO  # noqa: E402
from miniprob.infer.autoguide import (  # noqa: E402
    AutoDiagonalNormal,
    AutoLaplaceApproximation,
    AutoMultivariateNormal,
)
from miniprob.nn import PyroModule, PyroSample  # noqa: E402
from miniprob.optim import ClippedAdam  # noqa: E402

FAST = bool(os.environ.get("MINIPROB_FAST"))
HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
OUT = Path(os.environ.get("MINIPROB_OUT") or HERE / "out")
OUT.mkdir(parents=True, exist_ok=True)
STEPS = 600 if FAST else 3000

print(f"mode: {'fast' if FAST else 'full'}; figures go to {OUT}")

# %% [markdown]
# ## The data
#
# Disease progression one year after baseline, against body-mass index, blood pressure and
# one blood serum measurement (`s5`, a log triglyceride level). Features and target are
# standardized, so that unit-scale priors are weak.

# %%
data = load_diabetes()
FEATURES = ["bmi", "bp", "s5"]
columns = [data.feature_names.index(name) for name in FEATURES]
x = torch.tensor(data.data[:, columns], dtype=torch.float32)
y = torch.tensor(data.target, dtype=torch.float32)
x = (x - x.mean(0)) / x.std(0)
y = (y - y.mean()) / y.std()
N, D = x.shape
correlation = torch.corrcoef(x.T)
print(f"{N} patients, features {FEATURES}; correlation of bmi and s5: {correlation[0, 2]:.2f}")
assert N == 442 and correlation[0, 2] > 0.4  # correlated features: correlated weights

# %% [markdown]
# ## The model
#
# `PyroModule[nn.Linear]` is `nn.Linear` with Pyro effects; setting its `weight` and `bias` to
# `PyroSample` priors makes each forward pass draw them (sites `linear.weight`, `linear.bias`).
# The noise scale is an ordinary `sample` statement.


# %%
class BayesianRegression(PyroModule):
    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = PyroModule[nn.Linear](in_features, out_features)
        self.linear.weight = PyroSample(
            dist.Normal(0.0, 1.0).expand([out_features, in_features]).to_event(2)
        )
        self.linear.bias = PyroSample(dist.Normal(0.0, 10.0).expand([out_features]).to_event(1))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        sigma = pyro.sample("sigma", dist.Uniform(0.0, 10.0))
        mean = self.linear(x).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mean, sigma), obs=y)
        return mean


# %% [markdown]
# ## Fitting three autoguides
#
# Each guide is built from the model alone. The flat guides pack the latents (three weights,
# a bias and `sigma`, which `biject_to` maps from (0, 10) to the real line) into one vector of
# length 5. One-sample ELBO gradients are noisy, so the learning rate decays (`ClippedAdam`'s
# `lrd`, per step) to a twentieth of its start: the fit settles instead of jittering around
# the optimum.


# %%
def fit(make_guide, lr=0.1):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = BayesianRegression(D, 1)
    guide = make_guide(model)
    optim = ClippedAdam({"lr": lr, "lrd": 0.05 ** (1 / STEPS)})
    svi = SVI(model, guide, optim, Trace_ELBO())
    losses = [svi.step(x, y) for _ in range(STEPS)]
    return model, guide, losses


fits = {}
for name, make_guide in [
    ("AutoDiagonalNormal", AutoDiagonalNormal),
    ("AutoMultivariateNormal", AutoMultivariateNormal),
    ("AutoLaplaceApproximation", AutoLaplaceApproximation),
]:
    model, guide, losses = fit(make_guide)
    first, last = sum(losses[:50]) / 50, sum(losses[-50:]) / 50
    print(f"{name}: loss {first:.1f} -> {last:.1f}; params {sorted(pyro.get_param_store())}")
    assert last < first
    fits[name] = (model, guide, losses)
assert fits["AutoDiagonalNormal"][1].latent_dim == D + 2

# %% [markdown]
# The Laplace guide was trained as a point mass (MAP); `laplace_approximation()` turns it into
# an `AutoMultivariateNormal` with fixed parameters, centred at the MAP point, whose covariance
# is the inverse Hessian of the negative log joint there.

# %%
model, map_guide, _ = fits["AutoLaplaceApproximation"]
laplace = map_guide.laplace_approximation(x, y)
guides = {
    "AutoDiagonalNormal": fits["AutoDiagonalNormal"][1],
    "AutoMultivariateNormal": fits["AutoMultivariateNormal"][1],
    "AutoLaplaceApproximation": laplace,
}

# %% [markdown]
# ## Against the exact answer
#
# Given the noise scale, the weights' posterior is Gaussian in closed form:
# covariance `(X'X / sigma^2 + prior precision)^-1` and mean `cov X'y / sigma^2` (X with a
# column of ones for the bias). At `sigma`'s posterior median every guide's weights should sit
# near that mean; the Laplace approximation, whose Gaussian is built from the exact curvature,
# should also match its standard deviations closely.

# %%
design = torch.cat([x, torch.ones(N, 1)], dim=1).double()
prior_precision = torch.diag(torch.tensor([1.0] * D + [1.0 / 100.0], dtype=torch.float64))


def exact_weights(sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    precision = design.T @ design / sigma**2 + prior_precision
    cov = torch.linalg.inv(precision)
    return cov @ design.T @ y.double() / sigma**2, cov


quantiles = {name: guide.quantiles([0.05, 0.5, 0.95], x, y) for name, guide in guides.items()}
for name, q in quantiles.items():
    sigma = q["sigma"][1].item()
    mean, cov = exact_weights(sigma)
    sd = cov.diagonal().sqrt()
    median = torch.cat([q["linear.weight"][1].reshape(-1), q["linear.bias"][1]]).double()
    error = ((median - mean).abs() / sd).max().item()
    print(f"{name}: sigma {sigma:.3f}; medians within {error:.2f} posterior sds of exact means")
    assert error < 0.5

laplace_q = quantiles["AutoLaplaceApproximation"]
mean, cov = exact_weights(laplace_q["sigma"][1].item())
half_width = (laplace_q["linear.weight"][2] - laplace_q["linear.weight"][0]).reshape(-1) / 2
exact_half_width = 1.6448536 * cov.diagonal()[:D].sqrt()
ratio = (half_width.double() / exact_half_width).tolist()
print("Laplace 90% half-widths / exact:", [f"{r:.3f}" for r in ratio])
assert all(abs(r - 1) < 0.05 for r in ratio)

# %% [markdown]
# ## Correlated weights
#
# BMI and `s5` are correlated, so their weights are anti-correlated in the posterior: a larger
# BMI effect explains part of what `s5` would. `AutoDiagonalNormal` cannot represent that (its
# covariance is diagonal by construction); the multivariate guides can. The flat vector is
# ordered as the sites were first sampled: `sigma`, then the weight (3 entries), then the bias.

# %%
exact_cov = exact_weights(laplace_q["sigma"][1].item())[1]
exact_corr = (exact_cov[0, 2] / (exact_cov[0, 0] * exact_cov[2, 2]).sqrt()).item()


def weight_correlation(guide) -> float:
    cov = guide.get_posterior().covariance_matrix.detach()
    return (cov[1, 3] / (cov[1, 1] * cov[3, 3]).sqrt()).item()


mvn_corr = weight_correlation(guides["AutoMultivariateNormal"])
laplace_corr = weight_correlation(laplace)
print(
    f"corr(w_bmi, w_s5): exact {exact_corr:.2f}, AutoMultivariateNormal {mvn_corr:.2f}, "
    f"Laplace {laplace_corr:.2f}, AutoDiagonalNormal 0 (by construction)"
)
assert exact_corr < -0.2
assert abs(laplace_corr - exact_corr) < 0.05
assert mvn_corr < 0 and abs(mvn_corr - exact_corr) < (0.25 if FAST else 0.1)

# %% [markdown]
# What a diagonal guide does instead: the best independent Normals (in KL(q || p)) have the
# variances of the posterior's *conditionals*, `1 / precision_ii`, smaller than its marginal
# variances `cov_ii` where weights are correlated. So `AutoDiagonalNormal`'s intervals for the
# correlated weights come out too narrow, by the factor `sqrt(1 / (precision_ii cov_ii))`.

# %%
diag_q = quantiles["AutoDiagonalNormal"]
sigma = diag_q["sigma"][1].item()
mean, cov = exact_weights(sigma)
precision = torch.linalg.inv(cov)
diag_half = (diag_q["linear.weight"][2] - diag_q["linear.weight"][0]).reshape(-1) / 2
conditional = 1.6448536 * precision.diagonal()[:D].rsqrt()
marginal = 1.6448536 * cov.diagonal()[:D].sqrt()
print("AutoDiagonalNormal 90% half-widths:", [f"{h:.4f}" for h in diag_half.tolist()])
print("  exact conditional:", [f"{h:.4f}" for h in conditional.tolist()])
print("  exact marginal:   ", [f"{h:.4f}" for h in marginal.tolist()])
assert ((diag_half.double() / conditional - 1).abs() < 0.1).all()
assert (conditional < marginal).all()

# %% [markdown]
# ## Posterior predictive bands
#
# `Predictive` runs the model with latents drawn from a guide. Along a line of BMI values
# (the other features at their mean), we draw the regression mean (`_RETURN`) and new
# observations (`obs`) and plot their 5%-95% bands for each guide.

# %%
grid = torch.linspace(-2.5, 3.0, 50)
x_grid = torch.zeros(50, D)
x_grid[:, 0] = grid
num_samples = 200 if FAST else 1000
fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
widths = {}
for ax, (name, guide) in zip(axes, guides.items(), strict=True):
    pyro.set_rng_seed(1)
    predictive = Predictive(
        fits[name][0], guide=guide, num_samples=num_samples, return_sites=("obs", "_RETURN")
    )
    samples = predictive(x_grid)
    mean_band = samples["_RETURN"].quantile(torch.tensor([0.05, 0.5, 0.95]), dim=0)
    obs_band = samples["obs"].quantile(torch.tensor([0.05, 0.95]), dim=0)
    widths[name] = ((obs_band[1] - obs_band[0]).mean().item(), mean_band)
    ax.scatter(x[:, 0], y, s=4, color="gray", alpha=0.5, label="patients")
    ax.fill_between(grid, obs_band[0], obs_band[1], alpha=0.2, label="obs 90%")
    ax.fill_between(grid, mean_band[0], mean_band[2], alpha=0.5, label="mean 90%")
    ax.plot(grid, mean_band[1], color="k", lw=1)
    ax.set_title(name)
    ax.set_xlabel("bmi (standardized)")
axes[0].set_ylabel("progression (standardized)")
axes[0].legend(loc="upper left")
fig.tight_layout()
fig.savefig(OUT / "bayesian_regression_bands.png", dpi=100)
plt.close(fig)

# The band for a new observation is about 2 * 1.645 * sigma wide; the mean's band is narrow.
for name, (obs_width, mean_band) in widths.items():
    sigma = quantiles[name]["sigma"][1].item()
    print(f"{name}: obs band width {obs_width:.2f} (2 * 1.645 * sigma = {3.29 * sigma:.2f})")
    assert abs(obs_width / (3.29 * sigma) - 1) < 0.15
    assert (mean_band[2] - mean_band[0]).mean() < 0.3 * obs_width

# %% [markdown]
# ## The three posteriors
#
# Medians and 90% intervals from `guide.quantiles([0.05, 0.5, 0.95])`, per latent.

# %%
rows = []
for site in ["linear.weight", "linear.bias", "sigma"]:
    for i in range(quantiles["AutoDiagonalNormal"][site].reshape(3, -1).shape[1]):
        label = f"w_{FEATURES[i]}" if site == "linear.weight" else site.split(".")[-1]
        cells = []
        for q in quantiles.values():
            lo, mid, hi = q[site].reshape(3, -1)[:, i].tolist()
            cells.append(f"{mid:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
print("| latent | " + " | ".join(quantiles) + " |")
print("|---|---|---|---|")
print("\n".join(rows))

# The three agree on where the posterior is (medians within 0.3 of an interval's half-width).
for site in ["linear.weight", "linear.bias", "sigma"]:
    medians = torch.stack([q[site][1].reshape(-1) for q in quantiles.values()])
    spread = medians.max(0).values - medians.min(0).values
    lo, _, hi = quantiles["AutoLaplaceApproximation"][site]
    assert (spread < 0.3 * (hi - lo).reshape(-1) / 2).all(), site
print("done")
