"""``Unit``: a distribution over the empty set whose log density is a given ``log_factor``."""

from __future__ import annotations

import torch
from torch.distributions import constraints

from .shape import TorchDistribution


class Unit(TorchDistribution):
    """Adds ``log_factor`` to the log density; ``factor`` statements observe it.

    Example::

        >>> import torch
        >>> from miniprob.distributions.unit import Unit
        >>> u = Unit(torch.tensor([1.0, 2.0]))
        >>> u.sample().shape, u.log_prob(u.sample()).tolist()
        (torch.Size([2, 0]), [1.0, 2.0])
    """

    arg_constraints = {"log_factor": constraints.real}
    support = constraints.real

    def __init__(self, log_factor: torch.Tensor, has_rsample: bool | None = None) -> None:
        log_factor = torch.as_tensor(log_factor)
        self.log_factor = log_factor
        # Not reparameterized unless told, as in Pyro: a factor in a guide must say which it is.
        self._has_rsample = False if has_rsample is None else has_rsample
        self.has_rsample_specified = has_rsample is not None
        super().__init__(log_factor.shape, torch.Size((0,)), validate_args=False)

    @property
    def has_rsample(self) -> bool:
        return self._has_rsample

    def expand(self, batch_shape, _instance=None) -> Unit:
        has_rsample = self._has_rsample if self.has_rsample_specified else None
        return Unit(self.log_factor.expand(batch_shape), has_rsample)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return self.log_factor.new_empty(torch.Size(sample_shape) + self.batch_shape + (0,))

    rsample = sample

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        shape = torch.broadcast_shapes(self.batch_shape, value.shape[:-1])
        return self.log_factor.expand(shape)
