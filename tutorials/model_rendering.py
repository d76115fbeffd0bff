# %% [markdown]
# # Drawing a model: `render_model`
#
# `pyro.render_model(model, model_args=...)` runs a model once, records which sites each
# site's distribution was computed from, and draws the result with graphviz: one node per
# sample site, an edge from each site to the sites whose distributions use its value, and a box
# (a graphviz *cluster*) per plate, labelled with the plate's name in its bottom right corner.
# Observed sites are filled gray, latent ones white; `render_distributions=True` adds a legend
# naming each site's distribution, and `render_params=True` draws the `pyro.param` sites too.
# The graph is the one Pyro draws for the same model (tests/test_render_model.py compares
# their DOT sources).
#
# The model is the Bayesian linear regression of Pyro's regression tutorial: a country's log
# GDP explained by its terrain ruggedness, whether it is in Africa, and their interaction. The
# data here are simulated from known coefficients (no download).
#
# The claims this script checks, in every mode: **the picture has the six sites, `obs` is the
# only observed one and the only one inside the `data` plate, every latent site has an edge to
# `obs` and none to another latent site; in the posterior every pair of coefficients is linked
# (they share the child `obs`)**. Writing the picture needs graphviz's `dot` program
# (Debian's `graphviz` package; `make` installs it where it can).
#
# Modes: `MINIPROB_FAST=1` (CI) and the full run do the same here (one run of the model is
# all it takes). The picture goes to `MINIPROB_OUT` (default `tutorials/out/`).

# %%
import os
from pathlib import Path

import torch

import miniprob as pyro
import miniprob.distributions as dist
from miniprob.infer.inspect import get_dependencies

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
OUT = Path(os.environ.get("MINIPROB_OUT") or HERE / "out")
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Data and model
#
# 170 countries: ruggedness in [0, 6], a 0/1 flag for Africa, and a log GDP drawn from the
# regression below with coefficients fixed here.

# %%
pyro.set_rng_seed(0)
N = 170
is_africa = (torch.rand(N) < 0.3).float()
ruggedness = 6.0 * torch.rand(N)
log_gdp = (
    9.2 - 1.8 * is_africa - 0.2 * ruggedness + 0.4 * is_africa * ruggedness + 0.9 * torch.randn(N)
)


def model(is_africa, ruggedness, log_gdp=None):
    a = pyro.sample("a", dist.Normal(0.0, 10.0))
    b_a = pyro.sample("bA", dist.Normal(0.0, 1.0))
    b_r = pyro.sample("bR", dist.Normal(0.0, 1.0))
    b_ar = pyro.sample("bAR", dist.Normal(0.0, 1.0))
    sigma = pyro.sample("sigma", dist.Uniform(0.0, 10.0))
    mean = a + b_a * is_africa + b_r * ruggedness + b_ar * is_africa * ruggedness
    with pyro.plate("data", len(ruggedness)):
        return pyro.sample("obs", dist.Normal(mean, sigma), obs=log_gdp)


# %% [markdown]
# ## The picture
#
# `render_model` returns a `graphviz.Digraph`; `filename=` also writes it, in the format
# its suffix names.

# %%
picture = OUT / "bayesian_regression.png"
graph = pyro.render_model(
    model,
    model_args=(is_africa, ruggedness, log_gdp),
    render_distributions=True,
    filename=picture,
)
print(graph.source)
print(f"picture written to {picture} ({picture.stat().st_size} bytes)")

# %% [markdown]
# What it shows: the five latent coefficients `a`, `bA`, `bR`, `bAR` and `sigma` are white
# ellipses outside any plate (one value each, shared by all countries); `obs` is a gray
# ellipse inside the box `data` (one observation per country); an arrow leads from each
# coefficient to `obs`, whose distribution uses all five, and none between coefficients,
# which are independent in the prior. The legend lists `a ~ Normal`, ..., `sigma ~ Uniform`,
# `obs ~ Normal`.

# %%
source = graph.source
latents = ["a", "bA", "bR", "bAR", "sigma"]
cluster = source[source.index("subgraph cluster_data") :]
cluster = cluster[: cluster.index("}")]
assert all(f"\t{name} [label={name} fillcolor=white" in source for name in latents)
assert "obs [label=obs fillcolor=gray" in cluster and "label=data" in cluster
assert not any(f"\t{name} [" in cluster for name in latents)
assert all(f"{name} -> obs" in source for name in latents)
assert source.count(" -> ") == len(latents), "no edges between latent sites"
assert picture.read_bytes().startswith(b"\x89PNG")

# %% [markdown]
# ## Dependencies behind the picture
#
# `get_dependencies` gives the edges as data: `prior_dependencies` maps each site to the
# sites its distribution uses (itself included), and `posterior_dependencies` maps each latent
# site to the sites it depends on given the data. Conditioning on `obs` couples its parents
# ("moralization"): in the posterior every pair of coefficients is linked (each pair listed
# once, under the site that comes first in the model), which is why a mean-field guide cannot
# capture their correlations.

# %%
deps = get_dependencies(model, (is_africa, ruggedness, log_gdp))
print(deps["posterior_dependencies"])
assert set(deps["prior_dependencies"]["obs"]) == set(latents) | {"obs"}
for name in latents:
    assert set(deps["posterior_dependencies"][name]) >= set(latents[latents.index(name) :])
assert deps["posterior_dependencies"]["a"].keys() == set(latents) | {"obs"}
print("all claims hold")
