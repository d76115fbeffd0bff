"""``AutoGuideList`` and ``AutoCallable``: one guide made of parts, each for some sites."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from .base import AutoGuide

__all__ = ["AutoCallable", "AutoGuideList"]


class AutoCallable(AutoGuide):
    """A hand-written guide (a function of the model's arguments) as a part of an
    :class:`AutoGuideList`.

    :param model: the model.
    :param guide: the guide for some of the model's sites; it may return ``{site: value}``.
    :param median: an optional function returning ``{site: median}`` for those sites.
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        median: Callable[..., dict[str, torch.Tensor]] = lambda *args, **kwargs: {},
    ) -> None:
        super().__init__(model)
        self._guide = guide
        self.median = median

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Run the guide; returns what it returns (``{}`` for None)."""
        result = self._guide(*args, **kwargs)
        return {} if result is None else result

    def quantiles(
        self, quantiles: Iterable[float] | torch.Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """None: a hand-written guide gives no quantiles (``{}``)."""
        self._check_quantiles(quantiles)
        return {}


class AutoGuideList(AutoGuide, nn.ModuleList):
    """A guide made of parts, each built on the model with ``poutine.block`` so that no two
    parts cover one site; a part may be an autoguide or any guide function (wrapped in
    :class:`AutoCallable`). Parts share the list's plates (and so its subsamples) and are
    named ``AutoGuideList.0``, ``AutoGuideList.1``, ... in the param store.

    Example::

        >>> import torch, miniprob as pyro, miniprob.distributions as dist
        >>> from miniprob import poutine
        >>> from miniprob.infer.autoguide import AutoDelta, AutoNormal
        >>> def model():
        ...     pyro.sample("a", dist.Normal(0.0, 1.0))
        ...     pyro.sample("b", dist.Normal(0.0, 1.0))
        >>> pyro.clear_param_store()
        >>> guide = AutoGuideList(model)
        >>> guide.append(AutoDelta(poutine.block(model, expose=["a"])))
        >>> guide.append(AutoNormal(poutine.block(model, hide=["a"])))
        >>> sorted(guide()), sorted(pyro.get_param_store().keys())
        (['a', 'b'], ['AutoGuideList.0.a', 'AutoGuideList.1.locs.b', 'AutoGuideList.1.scales.b'])
    """

    def _check_prototype(self, part_trace: Any) -> None:
        for name, part_site in part_trace.iter_stochastic_nodes():
            site = self.prototype_trace.nodes.get(name)
            if site is None:
                raise ValueError(f"AutoGuideList: a part covers site '{name}', not in the model")
            if (
                part_site["fn"].batch_shape != site["fn"].batch_shape
                or part_site["fn"].event_shape != site["fn"].event_shape
                or part_site["value"].shape != site["value"].shape
            ):
                raise ValueError(
                    f"AutoGuideList: site '{name}' has shape {tuple(part_site['value'].shape)} "
                    f"in a part's model, {tuple(site['value'].shape)} in the list's"
                )

    def append(self, part: AutoGuide | Callable) -> None:
        """Add a part: an autoguide, or a guide function (wrapped in :class:`AutoCallable`)."""
        if not isinstance(part, AutoGuide):
            part = AutoCallable(self.model, part)
        if part._master is not None:
            raise ValueError(f"AutoGuideList: the part {part._pyro_name} is already in a list")
        if part.prototype_trace is not None or part._param_paths:
            raise ValueError(
                f"AutoGuideList: the part {part._pyro_name} has already run; append parts "
                "before their first call (their parameters are named after the list)"
            )
        self.add_module(str(len(self)), part)  # renames it: AutoGuideList.0, ...
        part._master = weakref.ref(self)

    def add(self, part: AutoGuide | Callable) -> None:
        """Pyro's older name for :meth:`append`."""
        self.append(part)

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Run every part (in the list's plates); returns the union of their values."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        self._create_plates(*args, **kwargs)
        result = {}
        for part in self:
            result.update(part(*args, **kwargs))
        return result

    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The parts' medians, together."""
        result = {}
        for part in self:
            result.update(part.median(*args, **kwargs))
        return result

    def quantiles(
        self, quantiles: Iterable[float] | torch.Tensor, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """The parts' quantiles, together."""
        self._check_quantiles(quantiles)
        result = {}
        for part in self:
            result.update(part.quantiles(quantiles, *args, **kwargs))
        return result
