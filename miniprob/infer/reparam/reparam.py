"""The base class of reparameterizers (see :mod:`miniprob.infer.reparam`)."""

from __future__ import annotations

from typing import Any

import torch
from torch.distributions import Distribution

from ...distributions import Delta, Independent


class Reparam:
    """A reparameterizer: :meth:`apply` turns one sample site into auxiliary sites.

    ``apply`` gets a simplified message (``name``, ``fn``, ``value``: an observed or initial
    value or None, ``is_observed``) and returns ``fn``, ``value`` and ``is_observed`` for the
    original site. ``args_kwargs`` holds the model's ``(args, kwargs)`` while ``apply`` runs
    under ``poutine.reparam`` used as a function wrapper (None otherwise).

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> from miniprob import poutine
        >>> class Shift(Reparam):
        ...     def apply(self, msg):
        ...         base = pyro.sample(msg["name"] + "_base", dist.Normal(0.0, 1.0))
        ...         return {"fn": dist.Delta(base + 5.0).mask(False), "value": base + 5.0,
        ...                 "is_observed": True}
        >>> model = lambda: pyro.sample("x", dist.Normal(5.0, 1.0))
        >>> x = poutine.reparam(model, config={"x": Shift()})()
        >>> bool(x > 0)
        True
    """

    args_kwargs: tuple[tuple, dict] | None = None

    def apply(self, msg: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError(
            f"{type(self).__name__} must implement apply(msg) (site '{msg['name']}')"
        )

    @staticmethod
    def _unwrap(fn: Distribution) -> tuple[Distribution, int]:
        """The distribution inside any ``Independent`` wrappers, and the event dim outside."""
        event_dim = len(fn.event_shape)
        while isinstance(fn, torch.distributions.Independent):
            fn = fn.base_dist
        return fn, event_dim

    @staticmethod
    def _wrap(fn: Distribution, event_dim: int) -> Distribution:
        """``fn`` with batch dims reinterpreted as event dims up to ``event_dim``."""
        extra = event_dim - len(fn.event_shape)
        if extra > 0:
            fn = Independent(fn, extra)
        return fn

    @staticmethod
    def _deterministic(value: torch.Tensor, event_dim: int) -> dict[str, Any]:
        """The original site's new message fields: observed at ``value``, as a
        ``pyro.deterministic`` site (a masked ``Delta``)."""
        return {
            "fn": Delta(value, event_dim=event_dim).mask(False),
            "value": value,
            "is_observed": True,
        }
