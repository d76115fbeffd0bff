"""``AutoNormal``: an independent Normal per latent element, in the unconstrained space."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ...distributions import Normal, constraints
from ...poutine.plate import plate
from ...primitives import sample
from .base import AutoGuide, LatentSite, bijection, constrained_site, latent_site, periodic_repeat
from .initialization import InitMessenger, init_to_feasible

__all__ = ["AutoNormal"]


def _check_init_scale(init_scale: Any) -> float:
    if not isinstance(init_scale, float) or not init_scale > 0:
        raise ValueError(f"expected init_scale to be a float > 0, got {init_scale!r}")
    return init_scale


class AutoNormal(AutoGuide):
    """A Normal for each latent site in its unconstrained space (the site's support reached
    through ``biject_to``), with a diagonal covariance and one ``loc`` and ``scale`` per
    element, in plates too (a subsampled plate reads the subsample's). Parameters:
    ``AutoNormal.locs.<site>`` and ``AutoNormal.scales.<site>``.

    Each site is drawn as ``<site>_unconstrained`` (an auxiliary site) and pushed through the
    transform; the guide's density includes the log-det-Jacobian, as in Pyro.

    :param model: the model.
    :param init_loc_fn: where the locs start (see :mod:`.initialization`).
    :param init_scale: the scales' initial value.
    :param create_plates: see :class:`AutoGuide`.

    Example::

        >>> import torch, miniprob as pyro, miniprob.distributions as dist
        >>> def model():
        ...     with pyro.plate("p", 3):
        ...         pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> pyro.clear_param_store()
        >>> guide = AutoNormal(model)
        >>> guide()["z"].shape, sorted(pyro.get_param_store().keys())
        (torch.Size([3]), ['AutoNormal.locs.z', 'AutoNormal.scales.z'])
    """

    scale_constraint = constraints.softplus_positive

    def __init__(
        self,
        model: Callable,
        *,
        init_loc_fn: Callable = init_to_feasible,
        init_scale: float = 0.1,
        create_plates: Callable[..., plate | Iterable[plate]] | None = None,
    ) -> None:
        self.init_loc_fn = init_loc_fn
        self._init_scale = _check_init_scale(init_scale)
        super().__init__(InitMessenger(init_loc_fn)(model), create_plates=create_plates)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        self._sites = []
        for name, site in self._latent_sites():
            init_loc = bijection(site).inv(site["value"].detach()).detach()
            # The unconstrained event may have more dims than the constrained one, or fewer.
            entry = latent_site(name, site, init_loc)
            event_dim = entry.event_dim
            for frame in site["cond_indep_stack"]:
                full_size = frame.full_size or frame.size
                if full_size != frame.size:
                    dim = frame.dim - event_dim
                    init_loc = periodic_repeat(init_loc, full_size, dim).contiguous()
            init_scale = torch.full_like(init_loc, self._init_scale)
            self._add_param(f"locs.{name}", init_loc, constraints.real, event_dim)
            self._add_param(f"scales.{name}", init_scale, self.scale_constraint, event_dim)
            self._sites.append(entry)

    def _loc_scale(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self._read(f"locs.{name}"), self._read(f"scales.{name}")

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Draw each latent site; returns ``{site: value}``."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        self._create_plates(*args, **kwargs)
        return {site.name: self._in_plates(site.plates, self._draw, site) for site in self._sites}

    def _draw(self, site: LatentSite) -> torch.Tensor:
        loc, scale = self._loc_scale(site.name)
        u = sample(
            site.name + "_unconstrained",
            Normal(loc, scale).to_event(site.event_dim),
            infer={"is_auxiliary": True},
        )
        return constrained_site(self._pyro_name, site, u)

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The posterior median of each latent site: its loc, constrained."""
        medians = {}
        for site in self._sites:
            loc = self._read(f"locs.{site.name}")
            median = site.transform(loc)
            medians[site.name] = median.clone() if median is loc else median
        return medians

    @torch.no_grad()
    def quantiles(
        self, quantiles: Iterable[float] | torch.Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """Posterior quantiles of each latent site (a leading dim over ``quantiles``).

        Example::

            >>> import miniprob as pyro, miniprob.distributions as dist
            >>> guide = AutoNormal(lambda: pyro.sample("z", dist.Normal(0.0, 1.0)))
            >>> _ = guide()
            >>> guide.quantiles([0.5])["z"].tolist()
            [0.0]
        """
        qs = self._check_quantiles(quantiles)
        results = {}
        for site in self._sites:
            loc, scale = self._loc_scale(site.name)
            q = torch.tensor(qs, dtype=loc.dtype, device=loc.device)
            q = q.reshape((-1,) + (1,) * loc.dim())
            results[site.name] = site.transform(Normal(loc, scale).icdf(q))
        return results
