"""Distributions: every ``torch.distributions`` class with Pyro's shape helpers, plus ``Delta``.

``miniprob.distributions.Normal`` is a subclass of ``torch.distributions.Normal`` that adds
``to_event``, ``expand_by``, ``mask`` and ``__call__`` (see :mod:`.shape`), through
:class:`TorchDistribution`, the base class of custom distributions. Plain torch distributions
are accepted at sample sites too.

Example::

    >>> import torch
    >>> import miniprob.distributions as dist
    >>> d = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    >>> isinstance(d, torch.distributions.Independent)
    True
"""

import functools

import torch
import torch.distributions as _td

# Re-exported through __all__, which is built below.
from torch.distributions import Distribution, kl_divergence, register_kl  # noqa: F401

from . import constraints, transforms  # noqa: F401
from .delta import Delta  # noqa: F401
from .shape import Independent, MaskedDistribution, ShapeHelpers  # noqa: F401


class TorchDistribution(ShapeHelpers, Distribution):
    """The base class of custom distributions, as Pyro's: a torch ``Distribution`` with the
    shape helpers (``to_event``, ``expand_by``, ``mask``, ``__call__``, ``event_dim``,
    ``shape()``). A subclass without an ``expand`` of its own is expanded by a wrapper, so it
    works inside plates.

    Example::

        >>> import torch
        >>> import miniprob.distributions as dist
        >>> class Unit(dist.TorchDistribution):
        ...     support = dist.constraints.real
        ...     def __init__(self, loc):
        ...         self.loc = loc
        ...         super().__init__(loc.shape)
        ...     def sample(self, sample_shape=torch.Size()):
        ...         return self.loc.expand(self.shape(sample_shape))
        ...     def log_prob(self, value):
        ...         return torch.zeros_like(value)
        >>> Unit(torch.zeros(2)).expand_by([3]).to_event(2).shape()
        torch.Size([3, 2])
    """

    def expand(self, batch_shape, _instance=None) -> Distribution:
        try:
            return super().expand(batch_shape, _instance)
        except NotImplementedError:  # the subclass defines no expand: wrap it, as Pyro does
            if torch.Size(batch_shape) == self.batch_shape:
                return self
            return _Expanded(self, batch_shape)


class _Expanded(TorchDistribution):
    """``base_dist`` expanded to ``batch_shape`` with independent draws, for distributions that
    cannot expand themselves."""

    arg_constraints: dict = {}

    def __init__(self, base_dist: Distribution, batch_shape: torch.Size) -> None:
        batch_shape = torch.Size(batch_shape)
        try:
            fits = torch.broadcast_shapes(base_dist.batch_shape, batch_shape) == batch_shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"cannot expand a distribution of batch shape {tuple(base_dist.batch_shape)} "
                f"to {tuple(batch_shape)}"
            )
        self.base_dist = base_dist
        super().__init__(batch_shape, base_dist.event_shape, validate_args=False)

    def expand(self, batch_shape, _instance=None) -> Distribution:
        return _Expanded(self.base_dist, batch_shape)

    @property
    def has_rsample(self) -> bool:
        return self.base_dist.has_rsample

    @_td.constraints.dependent_property
    def support(self):
        return self.base_dist.support

    def _draw(self, draw, sample_shape: torch.Size) -> torch.Tensor:
        # Draw the new leftmost dims, and the dims where the base has size 1, as sample dims;
        # move the latter into the base's size-1 dims, then drop the size-1 dims left over.
        sample_shape = torch.Size(sample_shape)
        base_shape = self.base_dist.batch_shape
        n_new = len(self.batch_shape) - len(base_shape)
        grown = [
            i for i, size in enumerate(base_shape) if size == 1 and self.batch_shape[n_new + i] > 1
        ]
        extra = torch.Size(self.batch_shape[n_new + i] for i in grown)
        value = draw(sample_shape + self.batch_shape[:n_new] + extra)
        first = len(sample_shape) + n_new
        for j, i in enumerate(grown):
            value = value.transpose(first + j, first + len(grown) + i)
        return value.reshape(sample_shape + self.batch_shape + self.event_shape)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return self._draw(self.base_dist.sample, sample_shape)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return self._draw(self.base_dist.rsample, sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        log_p = self.base_dist.log_prob(value)
        value_batch = value.shape[: value.dim() - len(self.event_shape)]
        return log_p.expand(torch.broadcast_shapes(log_p.shape, value_batch, self.batch_shape))

    @property
    def mean(self) -> torch.Tensor:
        return self.base_dist.mean.expand(self.batch_shape + self.event_shape)

    @property
    def variance(self) -> torch.Tensor:
        return self.base_dist.variance.expand(self.batch_shape + self.event_shape)


def _with_helpers(cls: type) -> type:
    doc = (
        f"``torch.distributions.{cls.__name__}`` with Pyro's shape helpers (``to_event``, "
        f"``expand_by``, ``mask``); see torch's documentation for its arguments."
    )

    @functools.wraps(cls.__init__)  # keeps torch's signature for inspect.signature
    def __init__(self, *args, validate_args=None, **kwargs):
        # torch hands validate_args on to the distributions it builds inside (a LogNormal's
        # Normal, a Beta's Dirichlet): None would let those validate their arguments at every
        # construction and every log_prob. False, unless the caller asks for validation.
        validate_args = False if validate_args is None else validate_args
        cls.__init__(self, *args, validate_args=validate_args, **kwargs)

    attrs = {"__module__": __name__, "__doc__": doc, "__init__": __init__}
    return type(cls.__name__, (TorchDistribution, cls), attrs)


_WRAPPED = {}
for _name in _td.__all__:
    _cls = getattr(_td, _name)
    if (
        isinstance(_cls, type)
        and issubclass(_cls, Distribution)
        and _cls not in (Distribution, _td.Independent, _td.ExponentialFamily)
    ):
        _WRAPPED[_name] = _with_helpers(_cls)
globals().update(_WRAPPED)

__all__ = sorted(
    [
        *_WRAPPED,
        "Delta",
        "Distribution",
        "Independent",
        "MaskedDistribution",
        "ShapeHelpers",
        "TorchDistribution",
        "constraints",
        "kl_divergence",
        "register_kl",
        "transforms",
    ]
)
