"""``Delta``: a point mass, with an optional log density (as in Pyro)."""

from __future__ import annotations

import torch
from torch.distributions import Distribution, constraints

from .shape import TorchDistribution


class Delta(TorchDistribution):
    """Point mass at ``v``; ``event_dim`` rightmost dims of ``v`` form the event.

    ``log_prob(x)`` is ``log_density`` where ``x == v`` and ``-inf`` elsewhere.

    Example::

        >>> import torch
        >>> from miniprob.distributions import Delta
        >>> d = Delta(torch.tensor([1.0, 2.0]), event_dim=1)
        >>> d.sample().tolist(), d.log_prob(torch.tensor([1.0, 2.0])).item()
        ([1.0, 2.0], 0.0)
    """

    has_rsample = True
    arg_constraints = {"v": constraints.dependent, "log_density": constraints.real}
    support = constraints.real

    def __init__(
        self, v: torch.Tensor, log_density: float | torch.Tensor = 0.0, event_dim: int = 0
    ) -> None:
        v = torch.as_tensor(v)
        if event_dim > v.dim():
            raise ValueError(f"Delta: event_dim={event_dim} exceeds v.dim()={v.dim()}")
        split = v.dim() - event_dim
        self.v = v
        self.log_density = torch.as_tensor(log_density, dtype=v.dtype, device=v.device)
        super().__init__(v.shape[:split], v.shape[split:], validate_args=False)

    def expand(self, batch_shape, _instance=None) -> Delta:
        batch_shape = torch.Size(batch_shape)
        v = self.v.expand(batch_shape + self.event_shape)
        log_density = (
            self.log_density.expand(batch_shape) if self.log_density.dim() else self.log_density
        )
        return Delta(v, log_density, len(self.event_shape))

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        draw = self.v.expand(torch.Size(sample_shape) + self.v.shape)
        if not sample_shape:
            self._draw = draw  # log_prob recognizes it without comparing
        return draw

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if x is self.v or x is self.__dict__.get("_draw"):
            # The point itself, or this Delta's draw of it (an autoguide's site): the
            # comparison would give log(1) = 0 everywhere, so the result is the log density.
            log_density = self.log_density
            return log_density.expand(self.batch_shape) if self.batch_shape else log_density
        v = self.v.expand(self.batch_shape + self.event_shape)
        log_p = (x == v).type(x.dtype).log()
        if self.event_shape:
            log_p = log_p.sum(tuple(range(-len(self.event_shape), 0)))
        return log_p + self.log_density

    @property
    def mean(self) -> torch.Tensor:
        return self.v

    @property
    def variance(self) -> torch.Tensor:
        return torch.zeros_like(self.v)


@torch.distributions.kl.register_kl(Delta, Distribution)
def _kl_delta(p: Delta, q: Distribution) -> torch.Tensor:
    """KL(delta_v || q) = -log q(v), as in Pyro (the point mass's ``log_density`` is not part
    of it)."""
    return -q.log_prob(p.v)
