"""``Empirical``: the distribution of a weighted set of samples (as Pyro's)."""

from __future__ import annotations

import torch
from torch.distributions import Categorical, constraints

from ..validation import is_validation_enabled
from .shape import TorchDistribution


class Empirical(TorchDistribution):
    """The samples ``samples`` weighted by ``exp(log_weights)``, drawn along the right-most dim
    of ``log_weights``: ``samples`` has shape ``batch_shape + (num_samples,) + event_shape``
    and ``log_weights`` ``batch_shape + (num_samples,)``. The same draws as Pyro's under one seed.

    Example::

        >>> import torch
        >>> d = Empirical(torch.randn(2, 3, 10), torch.ones(2, 3))
        >>> d.batch_shape, d.event_shape, d.sample((100,)).shape
        (torch.Size([2]), torch.Size([10]), torch.Size([100, 2, 10]))
        >>> Empirical(torch.tensor([1.0, 2.0, 2.0]), torch.zeros(3)).log_prob(
        ...     torch.tensor(2.0)).exp().item()
        0.6666666865348816
    """

    arg_constraints: dict = {}
    support = constraints.real
    has_enumerate_support = True

    def __init__(
        self, samples: torch.Tensor, log_weights: torch.Tensor, validate_args: bool | None = None
    ) -> None:
        sample_shape, weight_shape = samples.shape, log_weights.shape
        if weight_shape > sample_shape or weight_shape != sample_shape[: len(weight_shape)]:
            raise ValueError(
                f"The shape of ``log_weights`` ({weight_shape}) must match the leftmost shape "
                f"of ``samples`` ({sample_shape})"
            )
        self._samples = samples
        self._log_weights = log_weights
        self._aggregation_dim = log_weights.dim() - 1
        self._categorical = Categorical(logits=log_weights)
        super().__init__(
            weight_shape[:-1], sample_shape[len(weight_shape) :], validate_args=validate_args
        )

    @property
    def sample_size(self) -> int:
        """How many samples the distribution holds (in all batches)."""
        return self._log_weights.numel()

    @property
    def log_weights(self) -> torch.Tensor:
        return self._log_weights

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        index = self._categorical.sample(sample_shape)  # sample_shape + batch_shape
        # The samples with the aggregation dim first: num_samples + batch_shape + event_shape.
        samples = self._samples.movedim(self._aggregation_dim, 0)
        index = index.reshape((-1,) + self.batch_shape + (1,) * len(self.event_shape))
        index = index.expand((-1,) + samples.shape[1:])
        return samples.gather(0, index).reshape(torch.Size(sample_shape) + samples.shape[1:])

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The log of the total weight of the samples equal to ``value`` (one value per batch
        element: a ``sample_shape`` cannot be scored)."""
        expected = self.batch_shape + self.event_shape
        if (self._validate_args or is_validation_enabled()) and value.shape != expected:
            raise ValueError(f"``value.shape`` must be {expected}")
        if self.batch_shape:
            value = value.unsqueeze(self._aggregation_dim)
        selected = self._samples.eq(value)
        for _ in range(len(self.event_shape)):
            selected = selected.min(dim=-1)[0]
        probs = self._categorical.probs
        return (probs * selected.type(probs.type())).sum(dim=-1).log()

    def _weighted_mean(self, value: torch.Tensor) -> torch.Tensor:
        weights = self._log_weights.reshape(
            self._log_weights.shape + (1,) * (value.dim() - self._log_weights.dim())
        )
        dim = self._aggregation_dim
        relative = (weights - weights.max(dim=dim, keepdim=True)[0]).exp()
        return (value * relative).sum(dim=dim) / relative.sum(dim=dim)

    def _check_continuous(self, what: str) -> None:
        if self._samples.dtype in (torch.int32, torch.int64):
            raise ValueError(
                f"{what} for discrete empirical distribution undefined. Consider converting "
                "samples to ``torch.float32`` or ``torch.float64``. If these are samples from a "
                "`Categorical` distribution, consider converting to a `OneHotCategorical` "
                "distribution."
            )

    @property
    def mean(self) -> torch.Tensor:
        self._check_continuous("Mean")
        return self._weighted_mean(self._samples)

    @property
    def variance(self) -> torch.Tensor:
        self._check_continuous("Variance")
        mean = self.mean.unsqueeze(self._aggregation_dim)
        return self._weighted_mean((self._samples - mean) ** 2)

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        return self._samples
