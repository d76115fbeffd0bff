"""Pyro's shape helpers for torch distributions: ``to_event``, ``expand_by``, ``mask``.

Why subclasses and not patching: every ``torch.distributions`` class gets a subclass here that
adds the helpers (:class:`ShapeHelpers` first in the MRO), so ``miniprob.distributions.Normal``
is a real ``torch.distributions.Normal`` while torch's own classes stay untouched for other
libraries in the same process. They switch torch's per-call argument validation off, for the
distributions torch builds inside them too (the ``Normal`` of a ``LogNormal``): miniprob
validates at sample sites, once, instead (see ``miniprob.validation``).

Example::

    >>> import torch
    >>> from miniprob import distributions as dist
    >>> d = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    >>> d.batch_shape, d.event_shape
    (torch.Size([]), torch.Size([3]))
    >>> dist.Normal(0.0, 1.0).expand_by([4, 2]).batch_shape
    torch.Size([4, 2])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.distributions import Distribution, constraints


class ShapeHelpers:
    """Mixin adding Pyro's shape helpers to a torch distribution class."""

    _validate_args = False

    def expand(self, batch_shape, _instance=None) -> Distribution:
        # torch's expand makes ``type(self).__new__`` only for classes without an __init__ of
        # their own (ours have one, see ``miniprob.distributions``), else raises; give it the
        # instance to fill.
        if _instance is None:
            _instance = type(self).__new__(type(self))
        return super().expand(batch_shape, _instance)

    def __call__(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        """Draw a value: ``rsample`` where the distribution has it, else ``sample``."""
        if self.has_rsample:
            return self.rsample(sample_shape)
        return self.sample(sample_shape)

    def to_event(self, reinterpreted_batch_ndims: int | None = None) -> Distribution:
        """Treat the rightmost ``reinterpreted_batch_ndims`` batch dims as event dims."""
        if reinterpreted_batch_ndims is None:
            reinterpreted_batch_ndims = len(self.batch_shape)
        if reinterpreted_batch_ndims == 0:
            return self
        if reinterpreted_batch_ndims < 0:
            raise ValueError(
                f"to_event expects a non-negative number of dims, got {reinterpreted_batch_ndims}"
            )
        return Independent(self, reinterpreted_batch_ndims)

    @property
    def event_dim(self) -> int:
        """The number of event dims."""
        return len(self.event_shape)

    def shape(self, sample_shape: torch.Size = torch.Size()) -> torch.Size:
        """The shape of a draw: ``sample_shape + batch_shape + event_shape``."""
        return torch.Size(sample_shape) + self.batch_shape + self.event_shape

    def expand_by(self, sample_shape: Sequence[int]) -> Distribution:
        """Expand the batch shape on the left by ``sample_shape``."""
        return self.expand(torch.Size(sample_shape) + self.batch_shape)

    def mask(self, mask: bool | torch.Tensor) -> Distribution:
        """Zero the log density where ``mask`` is False (a bool or a bool tensor)."""
        if mask is True:
            return self
        return MaskedDistribution(self, mask)

    def has_rsample_(self, value: bool) -> Distribution:
        """Force reparameterized (True) or detached (False) draws from this instance, in place:
        inference then treats its sites as (non-)reparameterized. Returns ``self``.

        Example::

            >>> import miniprob.distributions as dist
            >>> d = dist.Normal(0.0, 1.0).has_rsample_(False)
            >>> d.has_rsample, d().requires_grad
            (False, False)
        """
        if not (value is True or value is False):
            raise ValueError(f"Expected value in [False,True], actual {value}")
        self.has_rsample = value
        return self


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

    @constraints.dependent_property
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


class MaskedDistribution(TorchDistribution):
    """``base_dist`` whose ``log_prob`` is zero where ``mask`` is False.

    Example::

        >>> import torch
        >>> from miniprob import distributions as dist
        >>> d = dist.Normal(torch.zeros(2), 1.0).mask(torch.tensor([True, False]))
        >>> d.log_prob(torch.zeros(2))[1].item()
        0.0
    """

    arg_constraints: dict = {}

    def __init__(self, base_dist: Distribution, mask: bool | torch.Tensor) -> None:
        # A mask given as a Python bool is kept too: as in Pyro, False computes nothing (no
        # graph to the parameters), and a bool masks the score function as well as the log
        # density (a tensor mask only the log density, see score_function_log_prob).
        self._mask_bool = mask if isinstance(mask, bool) else None
        if self._mask_bool is not None:
            mask = torch.tensor(mask)
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be a bool or a torch.bool tensor, got "
                f"{mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__}"
            )
        try:
            batch_shape = torch.broadcast_shapes(mask.shape, base_dist.batch_shape)
        except RuntimeError:
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not broadcast with the batch shape "
                f"{tuple(base_dist.batch_shape)} of {type(base_dist).__name__}"
            ) from None
        if mask.shape != batch_shape:
            mask = mask.expand(batch_shape)
        if base_dist.batch_shape != batch_shape:
            base_dist = base_dist.expand(batch_shape)
        self.base_dist = base_dist
        self._mask = mask
        super().__init__(batch_shape, base_dist.event_shape, validate_args=False)

    @property
    def has_rsample(self) -> bool:
        return self.base_dist.has_rsample

    @property
    def has_enumerate_support(self) -> bool:
        return self.base_dist.has_enumerate_support

    @constraints.dependent_property
    def support(self):
        return self.base_dist.support

    def expand(self, batch_shape, _instance=None) -> MaskedDistribution:
        batch_shape = torch.Size(batch_shape)
        mask = self._mask_bool if self._mask_bool is not None else self._mask.expand(batch_shape)
        return MaskedDistribution(self.base_dist.expand(batch_shape), mask)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return self.base_dist.sample(sample_shape)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return self.base_dist.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._mask_bool is False:  # nothing to compute, no graph to the parameters (Pyro)
            event_dim = len(self.event_shape)
            shape = torch.broadcast_shapes(self.batch_shape, value.shape[: value.dim() - event_dim])
            return torch.zeros((), device=value.device).expand(shape)
        log_p = self.base_dist.log_prob(value)
        return torch.where(self._mask, log_p, log_p.new_zeros(()))

    def score_function_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The log density whose gradient is the score function of a non-reparameterized site.

        A tensor mask zeroes a site's costs, not its score function: that is the base
        distribution's log density (unmasked through nested masks), as in Pyro. A mask given
        as a Python bool applies to both.
        """
        if self._mask_bool is not None:
            return self.log_prob(value)
        if isinstance(self.base_dist, MaskedDistribution):
            return self.base_dist.score_function_log_prob(value)
        return self.base_dist.log_prob(value)

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        return self.base_dist.enumerate_support(expand)

    @property
    def mean(self) -> torch.Tensor:
        return self.base_dist.mean

    @property
    def variance(self) -> torch.Tensor:
        return self.base_dist.variance


class Independent(TorchDistribution, torch.distributions.Independent):
    """torch's ``Independent`` with the shape helpers; ``to_event`` merges instead of nesting."""

    def expand(self, batch_shape, _instance=None) -> Distribution:
        if _instance is not None:  # a subclass's expand has made the instance to fill
            return super().expand(batch_shape, _instance)
        # What torch's expand builds, without its instance checks and __init__ chain.
        batch_shape = torch.Size(batch_shape)
        n = self.reinterpreted_batch_ndims
        new = type(self).__new__(type(self))
        new.base_dist = self.base_dist.expand(batch_shape + self.event_shape[:n])
        new.reinterpreted_batch_ndims = n
        new._batch_shape, new._event_shape = batch_shape, self._event_shape
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self.reinterpreted_batch_ndims != 1:
            return super().log_prob(value)
        # torch first reshapes to the same shape: a view with the same strides (so the same
        # sum, bit for bit) that only adds a node for every backward pass to visit.
        return self.base_dist.log_prob(value).sum(-1)

    def to_event(self, reinterpreted_batch_ndims: int | None = None) -> Distribution:
        if reinterpreted_batch_ndims is None:
            reinterpreted_batch_ndims = len(self.batch_shape)
        if reinterpreted_batch_ndims == 0:
            return self
        n = self.reinterpreted_batch_ndims + reinterpreted_batch_ndims
        if n < 0:
            raise ValueError(
                f"to_event({reinterpreted_batch_ndims}) removes more event dims than exist"
            )
        if n == 0:
            return self.base_dist
        return Independent(self.base_dist, n)


# KL divergences that Pyro computes in closed form and miniprob must too, whether or not pyro is
# imported (pyro registers some on torch's own classes, which miniprob's subclass): registered
# on miniprob's classes, so they take precedence over those and leave torch's registry for
# torch's classes as it is. Only a masked guide against a masked prior is closed-form, as in
# Pyro; a masked guide against an unmasked prior is estimated by Monte Carlo. Independent
# against Independent with different numbers of event dims, and a diagonal Normal against a
# MultivariateNormal, are closed-form (pyro registers both on torch's classes).


def _kl_masked_masked(p: MaskedDistribution, q: MaskedDistribution) -> torch.Tensor:
    if p._mask_bool is False or q._mask_bool is False:  # nothing to compute, no graph (Pyro)
        shape = torch.broadcast_shapes(p.batch_shape, q.batch_shape)
        return torch.zeros((), device=p._mask.device).expand(shape)
    # Zero wherever either side is masked out, as in Pyro.
    kl = torch.distributions.kl_divergence(p.base_dist, q.base_dist)
    return torch.where(p._mask & q._mask, kl, kl.new_zeros(()))


def _sum_rightmost(value: torch.Tensor, n: int) -> torch.Tensor:
    return value.reshape(value.shape[: value.dim() - n] + (-1,)).sum(-1) if n else value


def _kl_independent_independent(p: Independent, q: Independent) -> torch.Tensor:
    # The event dims both reinterpret are summed over; the extra ones of either side stay
    # reinterpreted in the KL of the rest (torch's own rule needs equal numbers of them).
    shared = min(p.reinterpreted_batch_ndims, q.reinterpreted_batch_ndims)

    def rest(d: Independent) -> Distribution:
        extra = d.reinterpreted_batch_ndims - shared
        return Independent(d.base_dist, extra) if extra else d.base_dist

    return _sum_rightmost(torch.distributions.kl_divergence(rest(p), rest(q)), shared)


def _kl_independent_mvn(p: Independent, q: torch.distributions.MultivariateNormal) -> torch.Tensor:
    """KL(N(a, diag(s^2)) || N(b, S)) for a diagonal Normal of ``k`` dims (one event dim).

    KL = 1/2 [tr(S^-1 diag(s^2)) + (b - a)^T S^-1 (b - a) - k + log|S| - log|diag(s^2)|], and
    the quadratic and log|S| terms are those of -log N(a | b, S) = 1/2 (b - a)^T S^-1 (b - a)
    + 1/2 log|S| + k/2 log(2 pi), so KL = 1/2 sum(s^2 diag(S^-1)) - k/2 (1 + log(2 pi))
    - log N(a | b, S) - sum(log s).
    """
    from .delta import Delta  # delta.py builds on this module

    normal = p.base_dist
    if p.reinterpreted_batch_ndims != 1:
        raise NotImplementedError
    if isinstance(normal, Delta):  # a point mass: KL(delta_v || q) = -log q(v), as in Pyro
        return -q.log_prob(normal.v)
    if not isinstance(normal, torch.distributions.Normal):
        raise NotImplementedError
    k = q.event_shape[0]
    trace = (normal.scale.pow(2) * q.precision_matrix.diagonal(dim1=-2, dim2=-1)).sum(-1)
    return (
        0.5 * trace
        - 0.5 * k * (1 + math.log(2 * math.pi))
        - q.log_prob(normal.loc)
        - normal.scale.log().sum(-1)
    )


torch.distributions.kl.register_kl(MaskedDistribution, MaskedDistribution)(_kl_masked_masked)
torch.distributions.kl.register_kl(Independent, Independent)(_kl_independent_independent)
torch.distributions.kl.register_kl(Independent, torch.distributions.MultivariateNormal)(
    _kl_independent_mvn
)
