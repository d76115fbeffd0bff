"""``AutoDelta``: a point mass at a learned value for each latent site (MAP inference)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ...distributions.delta import Delta
from ...poutine.plate import plate
from ...primitives import sample
from .base import AutoGuide, periodic_repeat
from .initialization import InitMessenger, init_to_median, support_errors

__all__ = ["AutoDelta"]


class AutoDelta(AutoGuide):
    """A ``Delta`` at a learned point for each latent site: MAP inference in the constrained
    space. Parameters: ``AutoDelta.<site>``, constrained to the site's support, one element
    per plate element (a subsampled plate reads the subsample's).

    :param model: the model.
    :param init_loc_fn: where the points start (see :mod:`.initialization`).
    :param create_plates: see :class:`AutoGuide`.

    Example::

        >>> import torch, miniprob as pyro, miniprob.distributions as dist
        >>> def model():
        ...     pyro.sample("s", dist.LogNormal(0.0, 1.0))
        >>> pyro.clear_param_store()
        >>> guide = AutoDelta(model)
        >>> sorted(guide())
        ['s']
        >>> sorted(pyro.get_param_store().keys())
        ['AutoDelta.s']
    """

    def __init__(
        self,
        model: Callable,
        init_loc_fn: Callable = init_to_median,
        *,
        create_plates: Callable[..., plate | Iterable[plate]] | None = None,
    ) -> None:
        self.init_loc_fn = init_loc_fn
        super().__init__(InitMessenger(init_loc_fn)(model), create_plates=create_plates)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        self._sites = []
        for name, site in self._latent_sites():
            value = site["value"].detach()
            event_dim = site["fn"].event_dim
            for frame in site["cond_indep_stack"]:
                full_size = frame.full_size or frame.size
                if full_size != frame.size:
                    value = periodic_repeat(value, full_size, frame.dim - event_dim).contiguous()
            with support_errors(site):
                self._add_param(name, value, site["fn"].support, event_dim)
            plates = tuple(f.name for f in site["cond_indep_stack"])
            self._sites.append((name, event_dim, plates))

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Draw (that is, return) the point of each latent site; ``{site: value}``."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        self._create_plates(*args, **kwargs)
        return {
            name: self._in_plates(plates, self._draw, name, dim)
            for name, dim, plates in self._sites
        }

    def _draw(self, name: str, event_dim: int) -> torch.Tensor:
        delta = Delta(self._read(name), event_dim=event_dim)
        return sample(name, delta, infer={"autoguide": self._pyro_name})

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The points, ``{site: value}`` (a call of the guide, detached)."""
        return {k: v.detach() for k, v in self(*args, **kwargs).items()}
