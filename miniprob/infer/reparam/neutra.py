"""``NeuTraReparam``: neural transport through a trained flat autoguide (see
:mod:`miniprob.infer.reparam`)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import torch
from torch.distributions import biject_to

from ...distributions import Delta
from ...poutine.handlers import mask
from ...poutine.plate_helpers import block_plate
from ...poutine.reparam_messenger import reparam
from ...primitives import sample
from ...runtime import get_stack
from ..autoguide import AutoContinuous
from .reparam import Reparam


def _sum_rightmost(value: torch.Tensor, dim: int) -> torch.Tensor:
    if dim <= 0:
        return value
    return value.reshape(value.shape[:-dim] + (-1,)).sum(-1)


def _masked_out() -> bool:
    # A ``poutine.mask(mask=False)`` outside: no density to compute (Pyro's get_mask() is False).
    return any(isinstance(h, mask) and h.mask.dim() == 0 and not bool(h.mask) for h in get_stack())


class NeuTraReparam(Reparam):
    """Reparameterize all the latent sites of a model at once through a trained flat autoguide
    (Hoffman et al. 2019, "NeuTra-lizing bad geometry in Hamiltonian Monte Carlo using neural
    transport"): one auxiliary site ``<first site>_shared_latent`` is drawn from the guide's
    base distribution and pushed through its transform, and each latent site takes its slice,
    constrained, with the density of the warped space. All sites share one instance; the model
    must have a static structure. The guide needs ``get_transform`` (``AutoDiagonalNormal``,
    ``AutoMultivariateNormal``).

    :param guide: a trained :class:`~miniprob.infer.autoguide.AutoContinuous`.

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> from miniprob import poutine
        >>> from miniprob.infer.autoguide import AutoDiagonalNormal
        >>> def model():
        ...     pyro.sample("a", dist.Normal(0.0, 1.0))
        ...     pyro.sample("b", dist.LogNormal(0.0, 1.0))
        >>> pyro.clear_param_store()
        >>> guide = AutoDiagonalNormal(model)
        >>> _ = guide()  # (train it with SVI first)
        >>> neutra = NeuTraReparam(guide)
        >>> list(poutine.trace(neutra.reparam(model)).get_trace().stochastic_nodes)
        ['a_shared_latent']
    """

    def __init__(self, guide: AutoContinuous) -> None:
        if not isinstance(guide, AutoContinuous):
            raise TypeError(
                f"NeuTraReparam expected an AutoContinuous guide, but got {type(guide)}"
            )
        self.guide = guide
        self.transform: torch.distributions.Transform | None = None
        self.x_unconstrained: dict[str, tuple[Any, torch.Tensor]] = {}

    def _reparam_config(self, site: dict) -> NeuTraReparam | None:
        return self if site["name"] in self.guide.prototype_trace else None

    def reparam(self, fn: Callable | None = None) -> reparam:
        """``poutine.reparam(fn)`` applying this reparameterizer to the guide's latent sites."""
        return reparam(fn, config=self._reparam_config)

    def apply(self, msg: dict[str, Any]) -> dict[str, Any]:
        name, fn, value = msg["name"], msg["fn"], msg["value"]
        if name not in self.guide.prototype_trace.nodes:
            return {"fn": fn, "value": value, "is_observed": msg["is_observed"]}
        if msg["is_observed"]:
            raise NotImplementedError(
                f"At pyro.sample({name!r},...), NeuTraReparam does not support observe statements."
            )
        log_density = 0.0
        compute_density = not _masked_out()
        if name not in self.x_unconstrained:  # the first site: draw the shared latent
            try:
                self.transform = self.guide.get_transform()
            except (NotImplementedError, TypeError) as e:
                raise ValueError(
                    "NeuTraReparam only supports guides that implement `get_transform` method "
                    f"that does not depend on the model's `*args, **kwargs` (site '{name}', "
                    f"guide {type(self.guide).__name__})"
                ) from e
            with ExitStack() as stack:
                for guide_plate in self.guide.plates.values():
                    stack.enter_context(block_plate(dim=guide_plate.dim, strict=False))
                z = sample(f"{name}_shared_latent", self.guide.get_base_dist().mask(False))
            x = self.transform(z)
            if compute_density:
                log_density = self.transform.log_abs_det_jacobian(z, x)
            self.x_unconstrained = {
                entry[0]: (entry, u) for entry, u in self.guide._unpack_latent(x)
            }
        _, unconstrained = self.x_unconstrained.pop(name)
        transform = biject_to(fn.support)
        value = transform(unconstrained)
        event_dim = len(fn.event_shape)
        if compute_density:
            logdet = transform.log_abs_det_jacobian(unconstrained, value)
            logdet = _sum_rightmost(logdet, logdet.dim() - value.dim() + event_dim)
            log_density = log_density + fn.log_prob(value) + logdet
        return {
            "fn": Delta(value, log_density, event_dim=event_dim),
            "value": value,
            "is_observed": True,
        }

    def transform_sample(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        """The latent sites' values (constrained) for draws ``latent`` of the warped space
        (batch dims on the left of the plates' dims).

        Example::

            >>> import miniprob as pyro, miniprob.distributions as dist
            >>> from miniprob.infer.autoguide import AutoDiagonalNormal
            >>> pyro.clear_param_store()
            >>> guide = AutoDiagonalNormal(lambda: pyro.sample("s", dist.LogNormal(0.0, 1.0)))
            >>> _ = guide()
            >>> NeuTraReparam(guide).transform_sample(torch.zeros(5, 1))["s"].shape
            torch.Size([5])
        """
        if self.transform is None:
            self.transform = self.guide.get_transform()
        samples = {}
        for entry, u in self.guide._unpack_latent(self.transform(latent)):
            support = self.guide.prototype_trace.nodes[entry[0]]["fn"].support
            samples[entry[0]] = biject_to(support)(u)
        return samples
