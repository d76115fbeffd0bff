"""The autoguide benchmark rows: the ``hier`` model of ``models.py`` with Pyro's autoguides.

``hier_autonormal`` and ``hier_autodiagonal`` fit the same model as ``hier`` with
``AutoNormal`` and ``AutoDiagonalNormal`` (miniprob's against Pyro's). Their floors write the
guides' math by hand in PyTorch: a Normal per site (or one Normal over the packed vector) in
the unconstrained space, ``exp`` onto the positive sites with its log-det-Jacobian, the
softplus-constrained scales, and the model's log density, as ``hier_floor`` has it.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from models import Floor, G, Problem, _normal, hier
from torch.distributions import LogNormal, constraints

from miniprob.distributions.constraints import softplus_positive

INIT_SCALE = 0.1
LOCS, SCALES = "AutoNormal.locs.", "AutoNormal.scales."  # Pyro's names, so floors compare


def hier_auto(pyro: Any, guide: str) -> Problem:
    """``hier`` with the guide ``pyro.infer.autoguide.<guide>``."""
    autoguide = importlib.import_module(pyro.__name__ + ".infer.autoguide")
    problem = hier(pyro)
    return Problem(problem.model, getattr(autoguide, guide)(problem.model), problem.args)


def _log_joint(data, mu, tau, theta, sigma) -> torch.Tensor:
    return (
        _normal(0.0, 10.0).log_prob(mu)
        + LogNormal(0.0, 1.0, validate_args=False).log_prob(tau)
        + _normal(mu, tau).log_prob(theta).sum()
        + LogNormal(0.0, 1.0, validate_args=False).log_prob(sigma).sum()
        + _normal(theta, sigma).log_prob(data).sum()
    )


def hier_autonormal_floor(data: torch.Tensor) -> Floor:
    """AutoNormal's math: per site ``u ~ Normal(loc, scale)``, ``exp(u)`` for ``tau`` and
    ``sigma`` (log q gains ``-u``), in the order the guide draws them."""

    def loss_fn(p):
        q = {
            s: _normal(p[f"{LOCS}{s}"], p[f"{SCALES}{s}"]) for s in ("mu", "tau", "theta", "sigma")
        }
        u = {s: d.rsample() for s, d in q.items()}
        log_q = (
            q["mu"].log_prob(u["mu"])
            + q["tau"].log_prob(u["tau"])
            - u["tau"]
            + q["theta"].log_prob(u["theta"]).sum()
            + q["sigma"].log_prob(u["sigma"]).sum()
            - u["sigma"].sum()
        )
        log_p = _log_joint(data, u["mu"], u["tau"].exp(), u["theta"], u["sigma"].exp())
        elbo = log_p - log_q
        return elbo, elbo

    real = constraints.real
    inits = {}
    for site, shape in (("mu", ()), ("tau", ()), ("theta", (G,)), ("sigma", (G,))):
        inits[f"{LOCS}{site}"] = (torch.zeros(shape), real)
        inits[f"{SCALES}{site}"] = (torch.full(shape, INIT_SCALE), softplus_positive)
    return Floor(inits, loss_fn)


def hier_autodiagonal_floor(data: torch.Tensor) -> Floor:
    """AutoDiagonalNormal's math: one ``Normal(loc, scale)`` over the packed vector
    ``[mu, log tau, theta, log sigma]``, sliced and mapped onto each site."""

    def loss_fn(p):
        q = _normal(p["AutoDiagonalNormal.loc"], p["AutoDiagonalNormal.scale"])
        u = q.rsample()
        mu, log_tau, theta, log_sigma = u.split([1, 1, G, G])
        log_q = q.log_prob(u).sum() - log_tau.sum() - log_sigma.sum()
        log_p = _log_joint(data, mu[0], log_tau[0].exp(), theta, log_sigma.exp())
        elbo = log_p - log_q
        return elbo, elbo

    inits = {
        "AutoDiagonalNormal.loc": (torch.zeros(2 + 2 * G), constraints.real),
        "AutoDiagonalNormal.scale": (torch.full((2 + 2 * G,), INIT_SCALE), softplus_positive),
    }
    return Floor(inits, loss_fn)


# name -> (builder, its keyword arguments, floor factory from the problem's args)
BENCHMARKS = {
    "hier_autonormal": (
        hier_auto,
        {"guide": "AutoNormal"},
        lambda args: hier_autonormal_floor(*args),
    ),
    "hier_autodiagonal": (
        hier_auto,
        {"guide": "AutoDiagonalNormal"},
        lambda args: hier_autodiagonal_floor(*args),
    ),
}
