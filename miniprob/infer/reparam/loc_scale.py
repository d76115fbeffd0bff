"""``LocScaleReparam``: decentering a location-scale family (see :mod:`miniprob.infer.reparam`)."""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch.distributions import constraints

from ...primitives import param, sample
from ...validation import is_validation_enabled
from .reparam import Reparam


class LocScaleReparam(Reparam):
    """Decenter a latent site of a distribution with ``loc`` and ``scale`` (Normal, StudentT,
    Cauchy, Laplace, ...): draw ``name_decentered`` from the same family with
    ``loc * centered`` and ``scale ** centered`` and map it back, so ``centered=0`` is the
    non-centered parameterization and ``centered=1`` leaves the site as it is.

    :param centered: in ``[0, 1]``, a number or a tensor; None (default) learns one per element
        as the parameter ``name_centered``, initialized at 0.5.
    :param shape_params: the other parameters copied unchanged into the decentered
        distribution (default: its ``arg_constraints`` other than loc and scale).

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> from miniprob import poutine
        >>> model = lambda: pyro.sample("x", dist.Normal(3.0, 2.0))
        >>> tr = poutine.trace(poutine.reparam(model, {"x": LocScaleReparam(0.0)})).get_trace()
        >>> bool(tr.nodes["x"]["value"] == 3.0 + 2.0 * tr.nodes["x_decentered"]["value"])
        True
    """

    def __init__(
        self,
        centered: float | torch.Tensor | None = None,
        shape_params: tuple[str, ...] | list[str] | None = None,
    ) -> None:
        if centered is not None and not isinstance(centered, (numbers.Real, torch.Tensor)):
            raise TypeError(
                "LocScaleReparam: 'centered' should be a number, a tensor or None, "
                f"got {centered!r}"
            )
        if centered is not None and is_validation_enabled():
            inside = (
                bool(((0 <= centered) & (centered <= 1)).all())
                if isinstance(centered, torch.Tensor)
                else 0 <= centered <= 1
            )
            if not inside:
                raise ValueError(f"LocScaleReparam: 'centered' should be in [0, 1], got {centered}")
        if shape_params is not None and not (
            isinstance(shape_params, (tuple, list))
            and all(isinstance(n, str) for n in shape_params)
        ):
            raise TypeError(
                f"LocScaleReparam: 'shape_params' should be a list of names, got {shape_params!r}"
            )
        self.centered = centered
        self.shape_params = shape_params

    def apply(self, msg: dict[str, Any]) -> dict[str, Any]:
        name, fn, value = msg["name"], msg["fn"], msg["value"]
        centered = self.centered
        if isinstance(centered, numbers.Number) and centered == 1:
            return msg
        event_shape = fn.event_shape
        fn, event_dim = self._unwrap(fn)
        if not (hasattr(fn, "loc") and hasattr(fn, "scale")):
            raise ValueError(
                f"LocScaleReparam at site '{name}': expected a distribution with loc and scale, "
                f"got {type(fn).__name__}"
            )
        if self.shape_params is None:
            self.shape_params = tuple(k for k in fn.arg_constraints if k not in ("loc", "scale"))
        params = {key: getattr(fn, key) for key in self.shape_params}
        if centered is None:
            loc = fn.loc
            centered = param(
                f"{name}_centered",
                lambda: loc.new_full(event_shape, 0.5),
                constraint=constraints.unit_interval,
            )
        params["loc"] = fn.loc * centered
        params["scale"] = fn.scale**centered
        decentered_fn = type(fn)(**params)

        # Invert the transform differentiably (for an observed or initial value).
        decentered_value = None
        if value is not None:
            delta = (value - fn.loc) * fn.scale.pow(centered - 1)
            decentered_value = delta + centered * fn.loc
        decentered_value = sample(
            f"{name}_decentered",
            self._wrap(decentered_fn, event_dim),
            obs=decentered_value,
            infer={"is_observed": msg["is_observed"]},
        )
        if value is None:
            delta = decentered_value - centered * fn.loc
            value = fn.loc + fn.scale.pow(1 - centered) * delta
        return self._deterministic(value, event_dim)
