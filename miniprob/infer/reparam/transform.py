"""``TransformReparam``: drawing a transformed distribution's base (see
:mod:`miniprob.infer.reparam`)."""

from __future__ import annotations

from typing import Any

import torch

from ...primitives import sample
from .reparam import Reparam


class TransformReparam(Reparam):
    """Reparameterize a latent ``TransformedDistribution`` site: draw ``name_base`` from its
    base distribution and push it through the transforms, so inference works in the base
    space (useful where the transforms change the geometry).

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> from miniprob import poutine
        >>> def model():
        ...     fn = dist.TransformedDistribution(
        ...         dist.Normal(0.0, 1.0), [dist.transforms.AffineTransform(1.0, 2.0)])
        ...     return pyro.sample("x", fn)
        >>> tr = poutine.trace(poutine.reparam(model, {"x": TransformReparam()})).get_trace()
        >>> bool(tr.nodes["x"]["value"] == 1.0 + 2.0 * tr.nodes["x_base"]["value"])
        True
    """

    def apply(self, msg: dict[str, Any]) -> dict[str, Any]:
        name, value = msg["name"], msg["value"]
        fn, event_dim = self._unwrap(msg["fn"])
        if not isinstance(fn, torch.distributions.TransformedDistribution):
            raise ValueError(
                f"TransformReparam at site '{name}': expected a TransformedDistribution, "
                f"got {type(fn).__name__}"
            )
        # Invert the transforms differentiably (for an observed or initial value).
        value_base = value
        if value is not None:
            for t in reversed(fn.transforms):
                value_base = t.inv(value_base)
        base_event_dim = event_dim
        for t in reversed(fn.transforms):
            base_event_dim += t.domain.event_dim - t.codomain.event_dim
        value_base = sample(
            f"{name}_base",
            self._wrap(fn.base_dist, base_event_dim),
            obs=value_base,
            infer={"is_observed": msg["is_observed"]},
        )
        if value is None:
            value = value_base
            for t in fn.transforms:
                value = t(value)
        return self._deterministic(value, event_dim)
