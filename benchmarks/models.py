"""The benchmark models, each written once against the Pyro-style API, and their floors.

A model builder takes the library module (``miniprob`` or ``pyro``) and returns a
:class:`Problem`: model, guide, the arguments of ``svi.step`` and the ELBO's keyword arguments.
Every builder makes its data and network weights from fixed seeds of its own, so the two
libraries see identical inputs.

A floor is the same computation written by hand in PyTorch: the same distributions, the same
random draws in the same order (guide first, subsample indices before anything else), one
``torch.optim.Adam`` over every leaf, and one ``.item()`` per step for the loss. It is what an
SVI step would cost with no framework at all; ``tests/test_benchmark_floors.py`` checks that
each floor reaches Pyro's parameters under one seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.distributions import (
    Bernoulli,
    Independent,
    LogNormal,
    Normal,
    constraints,
    transform_to,
)

LR = 0.01


@dataclass
class Problem:
    model: Callable
    guide: Callable
    args: tuple
    elbo_kwargs: dict = field(default_factory=dict)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _normal(loc: Any, scale: Any) -> Normal:
    return Normal(loc, scale, validate_args=False)


def _floor_transform(constraint: constraints.Constraint) -> Callable:
    """What a hand-written step would write: ``exp`` for a positive parameter (torch's
    ``transform_to(positive)`` is ``exp`` followed by ``x * 1 + 0``), torch's transform else."""
    if constraint is constraints.positive:
        return torch.exp
    return transform_to(constraint)


class Floor:
    """Hand-written SVI: leaves (unconstrained), their constraints, one Adam, a loss function.

    ``loss_fn(params)`` gets the constrained values by name and returns ``(elbo, surrogate)``;
    ``step()`` maximizes the surrogate and returns the loss as a float.
    """

    def __init__(
        self,
        inits: dict[str, tuple[torch.Tensor, constraints.Constraint]],
        loss_fn: Callable[[dict], tuple[torch.Tensor, torch.Tensor]],
        modules: dict[str, nn.Module] | None = None,
    ) -> None:
        self.transforms = {name: _floor_transform(c) for name, (_, c) in inits.items()}
        self.leaves = {
            name: transform_to(c)
            .inv(torch.as_tensor(init, dtype=torch.float32))
            .detach()
            .clone()
            .requires_grad_()
            for name, (init, c) in inits.items()
        }
        self.modules = modules or {}
        leaves = list(self.leaves.values())
        for module in self.modules.values():
            leaves += list(module.parameters())
        self.optim = torch.optim.Adam(leaves, lr=LR)
        self.loss_fn = loss_fn

    def constrained(self) -> dict[str, torch.Tensor]:
        return {name: self.transforms[name](u) for name, u in self.leaves.items()}

    def step(self) -> float:
        elbo, surrogate = self.loss_fn(self.constrained())
        (-surrogate).backward()
        self.optim.step()
        self.optim.zero_grad(set_to_none=True)
        return -elbo.item()

    def params(self) -> dict[str, torch.Tensor]:
        """Constrained values by Pyro's names (modules as ``'name$$$sub.weight'``)."""
        with torch.no_grad():
            out = {k: v.clone() for k, v in self.constrained().items()}
            for mname, module in self.modules.items():
                for pname, p in module.named_parameters():
                    out[f"{mname}$$$" + pname] = p.detach().clone()
        return out


# ---- tiny: one latent, 100 observations --------------------------------------------------
def tiny(pyro: Any) -> Problem:
    dist = pyro.distributions
    data = 3.0 + torch.randn(100, generator=_generator(0))

    def model(data):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)

    def guide(data):
        m = pyro.param("m", torch.tensor(0.0))
        s = pyro.param("s", torch.tensor(1.0), constraint=dist.constraints.positive)
        pyro.sample("loc", dist.Normal(m, s))

    return Problem(model, guide, (data,))


def tiny_floor(data: torch.Tensor) -> Floor:
    def loss_fn(p):
        q = _normal(p["m"], p["s"])
        loc = q.rsample()
        elbo = _normal(0.0, 10.0).log_prob(loc) + _normal(loc, 1.0).log_prob(data).sum()
        elbo = elbo - q.log_prob(loc)
        return elbo, elbo

    inits = {"m": (0.0, constraints.real), "s": (1.0, constraints.positive)}
    return Floor(inits, loss_fn)


# ---- linreg: Bayesian linear regression, 10 features, N = 1000 --------------------------
def linreg(pyro: Any, num_particles: int = 1, vectorize: bool = False) -> Problem:
    dist = pyro.distributions
    g = _generator(1)
    x = torch.randn(1000, 10, generator=g)
    y = x @ torch.linspace(-1, 1, 10) + 0.5 + 0.3 * torch.randn(1000, generator=g)

    def model(x, y):
        w = pyro.sample("w", dist.Normal(torch.zeros(10), 1.0).to_event(1))
        b = pyro.sample("b", dist.Normal(0.0, 10.0))
        sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", len(y)):
            pyro.sample("obs", dist.Normal((x * w).sum(-1) + b, sigma), obs=y)

    def guide(x, y):
        positive = dist.constraints.positive
        w_loc = pyro.param("w_loc", torch.zeros(10))
        w_scale = pyro.param("w_scale", torch.ones(10), constraint=positive)
        b_loc = pyro.param("b_loc", torch.tensor(0.0))
        b_scale = pyro.param("b_scale", torch.tensor(1.0), constraint=positive)
        s_loc = pyro.param("s_loc", torch.tensor(0.0))
        s_scale = pyro.param("s_scale", torch.tensor(0.5), constraint=positive)
        pyro.sample("w", dist.Normal(w_loc, w_scale).to_event(1))
        pyro.sample("b", dist.Normal(b_loc, b_scale))
        pyro.sample("sigma", dist.LogNormal(s_loc, s_scale))

    elbo_kwargs = {"num_particles": num_particles}
    if vectorize:
        elbo_kwargs.update(vectorize_particles=True, max_plate_nesting=1)
    return Problem(model, guide, (x, y), elbo_kwargs)


def linreg_floor(
    x: torch.Tensor, y: torch.Tensor, num_particles: int = 1, vectorize: bool = False
) -> Floor:
    def particle(p, shape):
        qw = Independent(_normal(p["w_loc"], p["w_scale"]), 1)
        qb = _normal(p["b_loc"], p["b_scale"])
        qs = LogNormal(p["s_loc"], p["s_scale"], validate_args=False)
        w, b, sigma = qw.rsample(shape), qb.rsample(shape), qs.rsample(shape)
        log_q = qw.log_prob(w).sum() + qb.log_prob(b).sum() + qs.log_prob(sigma).sum()
        log_p = (
            Independent(_normal(torch.zeros(10), 1.0), 1).log_prob(w).sum()
            + _normal(0.0, 10.0).log_prob(b).sum()
            + LogNormal(0.0, 1.0, validate_args=False).log_prob(sigma).sum()
            + _normal((x * w).sum(-1) + b, sigma).log_prob(y).sum()
        )
        return log_p - log_q

    def loss_fn(p):
        if vectorize:
            elbo = particle(p, (num_particles, 1)) / num_particles
        else:
            elbo = sum(particle(p, ()) for _ in range(num_particles)) / num_particles
        return elbo, elbo

    pos = constraints.positive
    inits = {
        "w_loc": (torch.zeros(10), constraints.real),
        "w_scale": (torch.ones(10), pos),
        "b_loc": (0.0, constraints.real),
        "b_scale": (1.0, pos),
        "s_loc": (0.0, constraints.real),
        "s_scale": (0.5, pos),
    }
    return Floor(inits, loss_fn)


# ---- hier: 50 groups x 20 observations, nested plates ------------------------------------
G, M = 50, 20


def hier(pyro: Any) -> Problem:
    dist = pyro.distributions
    g = _generator(2)
    means = 2.0 * torch.randn(G, generator=g)
    noise = torch.rand(G, generator=g) + 0.5
    data = means + noise * torch.randn(M, G, generator=g)

    def model(data):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        tau = pyro.sample("tau", dist.LogNormal(0.0, 1.0))
        with pyro.plate("groups", G, dim=-1):
            theta = pyro.sample("theta", dist.Normal(mu, tau))
            sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
            with pyro.plate("obs", M, dim=-2):
                pyro.sample("y", dist.Normal(theta, sigma), obs=data)

    def guide(data):
        positive = dist.constraints.positive
        mu_loc = pyro.param("mu_loc", torch.tensor(0.0))
        mu_scale = pyro.param("mu_scale", torch.tensor(1.0), constraint=positive)
        tau_loc = pyro.param("tau_loc", torch.tensor(0.0))
        tau_scale = pyro.param("tau_scale", torch.tensor(0.5), constraint=positive)
        theta_loc = pyro.param("theta_loc", torch.zeros(G))
        theta_scale = pyro.param("theta_scale", torch.ones(G), constraint=positive)
        sigma_loc = pyro.param("sigma_loc", torch.zeros(G))
        sigma_scale = pyro.param("sigma_scale", 0.5 * torch.ones(G), constraint=positive)
        pyro.sample("mu", dist.Normal(mu_loc, mu_scale))
        pyro.sample("tau", dist.LogNormal(tau_loc, tau_scale))
        with pyro.plate("groups", G, dim=-1):
            pyro.sample("theta", dist.Normal(theta_loc, theta_scale))
            pyro.sample("sigma", dist.LogNormal(sigma_loc, sigma_scale))

    return Problem(model, guide, (data,))


def hier_floor(data: torch.Tensor) -> Floor:
    def loss_fn(p):
        q_mu = _normal(p["mu_loc"], p["mu_scale"])
        q_tau = LogNormal(p["tau_loc"], p["tau_scale"], validate_args=False)
        q_theta = _normal(p["theta_loc"], p["theta_scale"])
        q_sigma = LogNormal(p["sigma_loc"], p["sigma_scale"], validate_args=False)
        mu, tau, theta, sigma = (
            q_mu.rsample(),
            q_tau.rsample(),
            q_theta.rsample(),
            q_sigma.rsample(),
        )
        log_q = (
            q_mu.log_prob(mu)
            + q_tau.log_prob(tau)
            + q_theta.log_prob(theta).sum()
            + q_sigma.log_prob(sigma).sum()
        )
        log_p = (
            _normal(0.0, 10.0).log_prob(mu)
            + LogNormal(0.0, 1.0, validate_args=False).log_prob(tau)
            + _normal(mu, tau).log_prob(theta).sum()
            + LogNormal(0.0, 1.0, validate_args=False).log_prob(sigma).sum()
            + _normal(theta, sigma).log_prob(data).sum()
        )
        elbo = log_p - log_q
        return elbo, elbo

    pos, real = constraints.positive, constraints.real
    inits = {
        "mu_loc": (0.0, real),
        "mu_scale": (1.0, pos),
        "tau_loc": (0.0, real),
        "tau_scale": (0.5, pos),
        "theta_loc": (torch.zeros(G), real),
        "theta_scale": (torch.ones(G), pos),
        "sigma_loc": (torch.zeros(G), real),
        "sigma_scale": (0.5 * torch.ones(G), pos),
    }
    return Floor(inits, loss_fn)


# ---- vae: 8x8 digits, hidden 128, z = 10, minibatch 128 ----------------------------------
HIDDEN, Z_DIM, BATCH = 128, 10, 128


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, HIDDEN)
        self.loc = nn.Linear(HIDDEN, Z_DIM)
        self.scale = nn.Linear(HIDDEN, Z_DIM)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = nn.functional.softplus(self.fc(x))
        return self.loc(h), nn.functional.softplus(self.scale(h)) + 1e-3


class Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(Z_DIM, HIDDEN)
        self.out = nn.Linear(HIDDEN, 64)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(nn.functional.softplus(self.fc(z)))


def digits() -> torch.Tensor:
    """scikit-learn's bundled 8x8 digits (1797 x 64), binarized at half intensity."""
    from sklearn.datasets import load_digits

    return (torch.as_tensor(load_digits().data, dtype=torch.float32) > 8).float()


def vae_networks() -> tuple[Encoder, Decoder]:
    with torch.random.fork_rng():
        torch.manual_seed(3)
        return Encoder(), Decoder()


def vae(pyro: Any, data: torch.Tensor | None = None, batch_size: int = BATCH) -> Problem:
    dist = pyro.distributions
    data = digits() if data is None else data
    encoder, decoder = vae_networks()

    def model(data):
        pyro.module("decoder", decoder)
        with pyro.plate("data", len(data), subsample_size=batch_size) as idx:
            z = pyro.sample("z", dist.Normal(torch.zeros(Z_DIM), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=data[idx])

    def guide(data):
        pyro.module("encoder", encoder)
        with pyro.plate("data", len(data), subsample_size=batch_size) as idx:
            loc, scale = encoder(data[idx])
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    return Problem(model, guide, (data,))


def vae_floor(data: torch.Tensor, batch_size: int = BATCH) -> Floor:
    encoder, decoder = vae_networks()
    n = len(data)

    def loss_fn(p):
        idx = torch.randperm(n)[:batch_size]
        x = data[idx]
        loc, scale = encoder(x)
        q = Independent(_normal(loc, scale), 1)
        z = q.rsample()
        log_p = Independent(_normal(torch.zeros(Z_DIM), 1.0), 1).log_prob(z)
        log_p = log_p + Independent(Bernoulli(logits=decoder(z), validate_args=False), 1).log_prob(
            x
        )
        elbo = (n / batch_size) * (log_p.sum() - q.log_prob(z).sum())
        return elbo, elbo

    return Floor({}, loss_fn, {"encoder": encoder, "decoder": decoder})


# ---- discrete: two-component mixture, a Bernoulli latent per point in the guide -----------
N_MIX = 200


def discrete(pyro: Any) -> Problem:
    dist = pyro.distributions
    g = _generator(4)
    side = (torch.rand(N_MIX, generator=g) < 0.5).float()
    data = 4.0 * side - 2.0 + torch.randn(N_MIX, generator=g)

    def model(data):
        locs = pyro.sample("locs", dist.Normal(torch.zeros(2), 10.0).to_event(1))
        with pyro.plate("data", len(data)):
            z = pyro.sample("z", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(locs[z.long()], 1.0), obs=data)

    def guide(data):
        locs_loc = pyro.param("locs_loc", torch.tensor([-1.0, 1.0]))
        locs_scale = pyro.param("locs_scale", torch.ones(2), constraint=dist.constraints.positive)
        probs = pyro.param(
            "probs", 0.5 * torch.ones(len(data)), constraint=dist.constraints.unit_interval
        )
        pyro.sample("locs", dist.Normal(locs_loc, locs_scale).to_event(1))
        with pyro.plate("data", len(data)):
            pyro.sample("z", dist.Bernoulli(probs))

    return Problem(model, guide, (data,))


def discrete_floor(data: torch.Tensor) -> Floor:
    def loss_fn(p):
        q_locs = Independent(_normal(p["locs_loc"], p["locs_scale"]), 1)
        q_z = Bernoulli(p["probs"], validate_args=False)
        locs = q_locs.rsample()
        z = q_z.sample()
        lq_locs, lq_z = q_locs.log_prob(locs), q_z.log_prob(z)
        lp_locs = Independent(_normal(torch.zeros(2), 10.0), 1).log_prob(locs)
        lp_z = Bernoulli(0.5 * torch.ones(len(data)), validate_args=False).log_prob(z)
        lp_x = _normal(locs[z.long()], 1.0).log_prob(data)
        elbo = (lp_locs + lp_z.sum() + lp_x.sum() - lq_locs - lq_z.sum()).detach()
        # Score-function term, Rao-Blackwellized over the data plate as in Trace_ELBO.
        log_r = (lp_locs - lq_locs).detach() + (lp_z - lq_z + lp_x).detach()
        surrogate = lp_locs + lp_z.sum() + lp_x.sum() - lq_locs + (log_r * lq_z).sum()
        return elbo, surrogate

    inits = {
        "locs_loc": (torch.tensor([-1.0, 1.0]), constraints.real),
        "locs_scale": (torch.ones(2), constraints.positive),
        "probs": (0.5 * torch.ones(len(data)), constraints.unit_interval),
    }
    return Floor(inits, loss_fn)


# ---- the per-site model: K independent latents --------------------------------------------
def sites(pyro: Any, k: int) -> Problem:
    dist = pyro.distributions

    def model():
        for i in range(k):
            pyro.sample(f"x{i}", dist.Normal(0.0, 1.0))

    def guide():
        for i in range(k):
            loc = pyro.param(f"loc{i}", torch.tensor(0.0))
            scale = pyro.param(f"scale{i}", torch.tensor(1.0), constraint=dist.constraints.positive)
            pyro.sample(f"x{i}", dist.Normal(loc, scale))

    return Problem(model, guide, ())


def sites_floor(k: int) -> Floor:
    def loss_fn(p):
        elbo = 0.0
        for i in range(k):
            q = _normal(p[f"loc{i}"], p[f"scale{i}"])
            x = q.rsample()
            elbo = elbo + _normal(0.0, 1.0).log_prob(x) - q.log_prob(x)
        return elbo, elbo

    inits = {}
    for i in range(k):
        inits[f"loc{i}"] = (0.0, constraints.real)
        inits[f"scale{i}"] = (1.0, constraints.positive)
    return Floor(inits, loss_fn)


# name -> (builder kwargs, floor factory from the problem's args)
BENCHMARKS: dict[str, tuple[Callable, dict, Callable]] = {
    "tiny": (tiny, {}, lambda args: tiny_floor(*args)),
    "linreg": (linreg, {}, lambda args: linreg_floor(*args)),
    "linreg_p10_loop": (
        linreg,
        {"num_particles": 10},
        lambda args: linreg_floor(*args, num_particles=10),
    ),
    "linreg_p10_vec": (
        linreg,
        {"num_particles": 10, "vectorize": True},
        lambda args: linreg_floor(*args, num_particles=10, vectorize=True),
    ),
    "hier": (hier, {}, lambda args: hier_floor(*args)),
    "vae": (vae, {}, lambda args: vae_floor(*args)),
    "discrete": (discrete, {}, lambda args: discrete_floor(*args)),
}
