"""The flat autoguides: all latents packed into one unconstrained vector.

``AutoContinuous`` maps each latent site to the real numbers (``biject_to`` of its support)
and concatenates them with :func:`miniprob.flat.ravel`, whose ``unravel`` splits a draw of the
vector back into sites. A subclass only says which distribution the vector has
(:meth:`AutoContinuous.get_posterior`): a diagonal Normal, a full-rank or low-rank
multivariate Normal, or a point mass (the Laplace approximation's MAP step). The vector is
drawn as one auxiliary site, ``_<guide name>_latent``; each latent site is then a ``Delta`` at
its constrained slice, carrying the log-det-Jacobian.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ...distributions import LowRankMultivariateNormal, MultivariateNormal, Normal, constraints
from ...distributions.delta import Delta
from ...distributions.transforms import AffineTransform, LowerCholeskyAffine
from ...flat import ravel
from ...poutine.handlers import replay, trace
from ...primitives import sample
from .base import AutoGuide, LatentSite, bijection, constrained_site, latent_site
from .initialization import InitMessenger, init_to_median
from .normal import _check_init_scale

__all__ = [
    "AutoContinuous",
    "AutoDiagonalNormal",
    "AutoLaplaceApproximation",
    "AutoLowRankMultivariateNormal",
    "AutoMultivariateNormal",
]


class AutoContinuous(AutoGuide):
    """Base of the flat autoguides (see the module docstring); ``latent_dim`` is the length
    of the vector.

    :param model: the model.
    :param init_loc_fn: where the vector's loc starts (see :mod:`.initialization`).
    """

    def __init__(self, model: Callable, init_loc_fn: Callable = init_to_median) -> None:
        self.init_loc_fn = init_loc_fn
        super().__init__(InitMessenger(init_loc_fn)(model))

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        unconstrained = []
        self._sites = []
        for name, site in self._latent_sites():
            u = bijection(site).inv(site["value"].detach())
            unconstrained.append((name, u))
            self._sites.append(latent_site(name, site, u))
        self.latent_dim = sum(u.numel() for _, u in unconstrained)
        if self.latent_dim == 0:
            raise ValueError(
                f"{type(self).__name__} found no latent sites in the model (use an empty "
                "guide instead)"
            )
        self._init_vector, self._unravel = ravel(unconstrained)
        self._unconstrained_shapes = {name: u.shape for name, u in unconstrained}

    def _init_loc(self) -> torch.Tensor:
        """The initial vector: each site's initial value, unconstrained and flattened."""
        return self._init_vector.detach()

    def _add_loc(self) -> torch.Tensor:
        """Add the vector's ``loc`` parameter, starting at :meth:`_init_loc`, and return it
        read from the store, as Pyro's guides do here (so it comes first in the store's order).
        """
        self._add_param("loc", self._init_loc(), plain=True)
        return self._read("loc")

    def get_posterior(self, *args: Any, **kwargs: Any) -> torch.distributions.Distribution:
        """The distribution of the vector."""
        raise NotImplementedError

    def _loc_scale(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has no marginal loc and scale")

    def get_base_dist(self) -> torch.distributions.Distribution:
        """The vector's distribution before :meth:`get_transform` (what ``NeuTraReparam``
        draws): a standard Normal, for the guides that have a transform."""
        raise NotImplementedError(f"{type(self).__name__} has no base distribution")

    def get_transform(self, *args: Any, **kwargs: Any) -> torch.distributions.Transform:
        """The transform from :meth:`get_base_dist` to the posterior of the vector."""
        raise NotImplementedError(f"{type(self).__name__} has no transform")

    def _standard_normal(self) -> torch.distributions.Distribution:
        loc = self._get("loc")
        return Normal(torch.zeros_like(loc), torch.ones_like(loc)).to_event(1)

    def sample_latent(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Draw the vector (an auxiliary site ``_<name>_latent``)."""
        return sample(
            f"_{self._pyro_name}_latent",
            self.get_posterior(*args, **kwargs),
            infer={"is_auxiliary": True},
        )

    def _unpack_latent(self, latent: torch.Tensor) -> Iterable[tuple[LatentSite, torch.Tensor]]:
        """``(site, unconstrained value)`` per site; leading dims of ``latent`` sit to the left
        of each site's event (so a particle plate lines up with the site's plates)."""
        parts = self._unravel(latent)
        batch = latent.shape[:-1]
        for site in self._sites:
            value = parts[site.name]
            if batch:
                shape = self._unconstrained_shapes[site.name]
                value = value.reshape(torch.broadcast_shapes(shape, batch + (1,) * site.event_dim))
            yield site, value

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Draw the vector, then each latent site from its slice; returns ``{site: value}``."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        latent = self.sample_latent(*args, **kwargs)
        self._create_plates(*args, **kwargs)
        guide = self._pyro_name
        return {
            site.name: self._in_plates(site.plates, constrained_site, guide, site, u)
            for site, u in self._unpack_latent(latent)
        }

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The posterior median of each latent site (the vector's loc, constrained)."""
        loc, _ = self._loc_scale(*args, **kwargs)
        return {site.name: site.transform(u) for site, u in self._unpack_latent(loc.detach())}

    @torch.no_grad()
    def quantiles(
        self, quantiles: Iterable[float] | torch.Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """Marginal posterior quantiles of each latent site (a leading dim over
        ``quantiles``)."""
        qs = self._check_quantiles(quantiles)
        loc, scale = self._loc_scale(*args, **kwargs)
        q = torch.tensor(qs, dtype=loc.dtype, device=loc.device).unsqueeze(-1)
        result: dict[str, list[torch.Tensor]] = {}
        for latent in Normal(loc, scale).icdf(q):
            for site, u in self._unpack_latent(latent):
                result.setdefault(site.name, []).append(site.transform(u))
        return {name: torch.stack(values) for name, values in result.items()}


class _ScaledContinuous(AutoContinuous):
    """A flat guide with a Normal-like scale: ``init_scale`` is the scale's initial value."""

    scale_constraint = constraints.softplus_positive

    def __init__(
        self, model: Callable, init_loc_fn: Callable = init_to_median, init_scale: float = 0.1
    ) -> None:
        self._init_scale = _check_init_scale(init_scale)
        super().__init__(model, init_loc_fn=init_loc_fn)


class AutoDiagonalNormal(_ScaledContinuous):
    """The vector ~ Normal(loc, scale), independent elements. Parameters:
    ``AutoDiagonalNormal.loc`` and ``AutoDiagonalNormal.scale``.

    :param init_scale: the scale's initial value.

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> def model():
        ...     pyro.sample("a", dist.Normal(0.0, 1.0))
        ...     pyro.sample("b", dist.Dirichlet(torch.ones(3)))
        >>> pyro.clear_param_store()
        >>> guide = AutoDiagonalNormal(model)
        >>> sorted(guide()), guide.latent_dim
        (['a', 'b'], 3)
    """

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        loc = self._add_loc()
        self._add_param(
            "scale", loc.new_full((self.latent_dim,), self._init_scale), self.scale_constraint
        )

    def get_posterior(self, *args: Any, **kwargs: Any) -> torch.distributions.Distribution:
        """A diagonal Normal over the vector."""
        return Normal(self._get("loc"), self._get("scale")).to_event(1)

    def get_base_dist(self) -> torch.distributions.Distribution:
        return self._standard_normal()

    def get_transform(self, *args: Any, **kwargs: Any) -> torch.distributions.Transform:
        return AffineTransform(self._get("loc"), self._get("scale"))

    def _loc_scale(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self._get("loc"), self._get("scale")


class AutoMultivariateNormal(_ScaledContinuous):
    """The vector ~ MultivariateNormal(loc, scale_tril = diag(scale) @ L), ``L`` lower
    triangular with a unit diagonal. Parameters: ``AutoMultivariateNormal.loc``, ``.scale``
    and ``.scale_tril``.

    :param init_scale: the scale's initial value (``L`` starts at the identity).

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> pyro.clear_param_store()
        >>> guide = AutoMultivariateNormal(lambda: pyro.sample("a", dist.Normal(0.0, 1.0)))
        >>> _ = guide(); round(guide.get_posterior().covariance_matrix.item(), 6)
        0.01
    """

    scale_tril_constraint = constraints.unit_lower_cholesky

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        loc = self._add_loc()
        self._add_param("scale", torch.full_like(loc, self._init_scale), self.scale_constraint)
        eye = torch.eye(self.latent_dim, dtype=loc.dtype, device=loc.device)
        self._add_param("scale_tril", eye, self.scale_tril_constraint)

    def _fix(self, loc: torch.Tensor, scale: torch.Tensor, scale_tril: torch.Tensor) -> None:
        """Replace the three parameters by fixed buffers (a Laplace approximation's)."""
        for path in ("loc", "scale", "scale_tril"):
            del self._param_paths[path]
            delattr(self, path)
        self.register_buffer("loc", loc)
        self.register_buffer("scale", scale)
        self.register_buffer("scale_tril", scale_tril)

    def _scale_tril(self) -> torch.Tensor:
        return self._get("scale")[..., None] * self._get("scale_tril")

    def get_posterior(self, *args: Any, **kwargs: Any) -> torch.distributions.Distribution:
        """A multivariate Normal over the vector."""
        return MultivariateNormal(self._get("loc"), scale_tril=self._scale_tril())

    def get_base_dist(self) -> torch.distributions.Distribution:
        return self._standard_normal()

    def get_transform(self, *args: Any, **kwargs: Any) -> torch.distributions.Transform:
        return LowerCholeskyAffine(self._get("loc"), scale_tril=self._scale_tril())

    def _loc_scale(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self._get("loc"), self._scale_tril().pow(2).sum(-1).sqrt()


class AutoLowRankMultivariateNormal(_ScaledContinuous):
    """The vector ~ LowRankMultivariateNormal: covariance ``D (W W^T + I) D`` with ``D`` the
    diagonal ``scale`` and ``W`` the ``cov_factor`` of rank ``rank``. Parameters:
    ``AutoLowRankMultivariateNormal.loc``, ``.scale``, ``.cov_factor``.

    :param init_scale: about the initial marginal scale.
    :param rank: the rank (default about ``sqrt(latent_dim)``).

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> pyro.clear_param_store()
        >>> guide = AutoLowRankMultivariateNormal(
        ...     lambda: pyro.sample("a", dist.Normal(torch.zeros(4), 1.0).to_event(1)))
        >>> _ = guide(); guide.rank
        2
    """

    def __init__(
        self,
        model: Callable,
        init_loc_fn: Callable = init_to_median,
        init_scale: float = 0.1,
        rank: int | None = None,
    ) -> None:
        if not (rank is None or isinstance(rank, int) and rank > 0):
            raise ValueError(f"expected rank to be a positive int, got {rank!r}")
        self.rank = rank
        super().__init__(model, init_loc_fn=init_loc_fn, init_scale=init_scale)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        loc = self._add_loc()
        if self.rank is None:
            self.rank = int(round(self.latent_dim**0.5))
        init_scale = loc.new_full((self.latent_dim,), 0.5**0.5 * self._init_scale)
        self._add_param("scale", init_scale, self.scale_constraint)
        cov_factor = loc.new_empty(self.latent_dim, self.rank).normal_(0, 1 / self.rank**0.5)
        self._add_param("cov_factor", cov_factor, plain=True)

    def get_posterior(self, *args: Any, **kwargs: Any) -> torch.distributions.Distribution:
        """A low-rank multivariate Normal over the vector."""
        scale = self._get("scale")
        cov_factor = self._get("cov_factor") * scale.unsqueeze(-1)
        return LowRankMultivariateNormal(self._get("loc"), cov_factor, scale * scale)

    def _loc_scale(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self._get("scale") * (self._get("cov_factor").pow(2).sum(-1) + 1).sqrt()
        return self._get("loc"), scale


def _hessian(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The Hessian of the scalar ``y`` with respect to the vector ``x``, row by row."""
    (dy,) = torch.autograd.grad(y, x, create_graph=True)
    rows = [torch.autograd.grad(d, x, retain_graph=True)[0].reshape(-1) for d in dy.reshape(-1)]
    return torch.stack(rows)


class AutoLaplaceApproximation(AutoContinuous):
    """MAP inference over the vector (a point mass at ``loc``), then
    :meth:`laplace_approximation`: a multivariate Normal at the MAP point whose covariance is
    the inverse Hessian of ``-log p(x, z)`` there (in the unconstrained space).

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> def model():
        ...     pyro.sample("a", dist.Normal(1.0, 2.0))
        >>> pyro.clear_param_store()
        >>> guide = AutoLaplaceApproximation(model)
        >>> _ = guide()
        >>> gaussian = guide.laplace_approximation()
        >>> gaussian.get_posterior().covariance_matrix.tolist()
        [[4.0]]
    """

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        self._add_param("loc", self._init_loc(), plain=True)

    def get_posterior(self, *args: Any, **kwargs: Any) -> torch.distributions.Distribution:
        """A point mass at ``loc``."""
        return Delta(self._get("loc")).to_event(1)

    def _loc_scale(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        loc = self._get("loc")
        return loc, torch.zeros_like(loc)

    def laplace_approximation(self, *args: Any, **kwargs: Any) -> AutoMultivariateNormal:
        """An :class:`AutoMultivariateNormal` (fixed, no parameters) centred at the MAP point,
        with covariance the inverse Hessian of the negative log joint there."""
        guide_trace = trace(self).get_trace(*args, **kwargs)
        model_trace = trace(replay(self.model, trace=guide_trace)).get_trace(*args, **kwargs)
        loss = guide_trace.log_prob_sum() - model_trace.log_prob_sum()
        loc_leaf = self._parameters["loc"]
        hessian = _hessian(loss, loc_leaf)
        with torch.no_grad():
            loc = loc_leaf.detach()
            cov = hessian.inverse()
            scale = cov.diagonal().sqrt()
            cov /= scale[:, None]
            cov /= scale[None, :]
            scale_tril = torch.linalg.cholesky(cov)
        gaussian = AutoMultivariateNormal(self.model)
        gaussian._setup_prototype(*args, **kwargs)
        gaussian._fix(loc, scale, scale_tril)
        return gaussian
