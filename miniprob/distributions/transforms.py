"""Bijections: torch's ``torch.distributions.transforms`` with ``transform_to``/``biject_to``,
and the transforms to Pyro's extra constraints (``softplus_positive``, ``unit_lower_cholesky``).

Example::

    >>> import torch
    >>> from miniprob.distributions import constraints, transforms
    >>> t = transforms.transform_to(constraints.positive)
    >>> t(torch.tensor(0.0)).item()
    1.0
    >>> transforms.transform_to(constraints.unit_lower_cholesky)(torch.ones(2, 2)).tolist()
    [[1.0, 0.0], [1.0, 1.0]]
"""

from __future__ import annotations

import torch
from torch.distributions.constraint_registry import biject_to, transform_to
from torch.distributions.transforms import *  # noqa: F403
from torch.distributions.transforms import SoftplusTransform, Transform
from torch.distributions.transforms import __all__ as _torch_all

from . import constraints


class UnitLowerCholeskyTransform(Transform):
    """Square matrices to lower-triangular ones with a unit diagonal (the strict lower
    triangle is kept, the rest replaced), as Pyro's; its inverse returns the matrix."""

    domain = constraints.independent(constraints.real, 2)
    codomain = constraints.unit_lower_cholesky

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnitLowerCholeskyTransform)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x.tril(-1) + torch.eye(x.size(-1), device=x.device, dtype=x.dtype)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y


class SoftplusLowerCholeskyTransform(Transform):
    """Square matrices to lower Cholesky factors: the strict lower triangle kept, ``softplus``
    on the diagonal (as Pyro's)."""

    domain = constraints.independent(constraints.real, 2)
    codomain = constraints.softplus_lower_cholesky

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SoftplusLowerCholeskyTransform)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        diag = torch.nn.functional.softplus(x.diagonal(dim1=-2, dim2=-1))
        return x.tril(-1) + diag.diag_embed()

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        diag = y.diagonal(dim1=-2, dim2=-1)
        return y.tril(-1) + (diag + (-diag).expm1().neg().log()).diag_embed()


class LowerCholeskyAffine(Transform):
    """``y = scale_tril @ x + loc`` for vectors ``x`` (Pyro's transform; ``scale_tril`` lower
    triangular with a positive diagonal).

    Example::

        >>> t = LowerCholeskyAffine(torch.zeros(2), torch.tensor([[2.0, 0.0], [1.0, 1.0]]))
        >>> t(torch.ones(2)).tolist(), t.inv(torch.tensor([2.0, 2.0])).tolist()
        ([2.0, 2.0], [1.0, 1.0])
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, loc: torch.Tensor, scale_tril: torch.Tensor, cache_size: int = 0) -> None:
        super().__init__(cache_size=cache_size)
        if not loc.size(-1) == scale_tril.size(-1) == scale_tril.size(-2):
            raise ValueError(
                "loc and scale_tril must be of size D and D x D, respectively (instead: "
                f"{loc.shape}, {scale_tril.shape})"
            )
        self.loc = loc
        self.scale_tril = scale_tril

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.scale_tril, x.unsqueeze(-1)).squeeze(-1) + self.loc

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        shifted = (y - self.loc).unsqueeze(-1)
        return torch.linalg.solve_triangular(self.scale_tril, shifted, upper=False).squeeze(-1)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ones = torch.ones(x.size()[:-1], dtype=x.dtype, layout=x.layout, device=x.device)
        return ones * self.scale_tril.diag().log().sum()

    def with_cache(self, cache_size: int = 1) -> LowerCholeskyAffine:
        if self._cache_size == cache_size:
            return self
        return LowerCholeskyAffine(self.loc, self.scale_tril, cache_size=cache_size)


biject_to.register(constraints.softplus_positive, lambda _: SoftplusTransform())
transform_to.register(constraints.softplus_positive, lambda _: SoftplusTransform())
transform_to.register(
    constraints.softplus_lower_cholesky, lambda _: SoftplusLowerCholeskyTransform()
)
transform_to.register(constraints.unit_lower_cholesky, lambda _: UnitLowerCholeskyTransform())

__all__ = [
    *_torch_all,
    "LowerCholeskyAffine",
    "SoftplusLowerCholeskyTransform",
    "UnitLowerCholeskyTransform",
    "biject_to",
    "transform_to",
]
