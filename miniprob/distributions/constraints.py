"""Constraints as objects: torch's ``torch.distributions.constraints``, re-exported.

They are the very same objects, so ``transform_to`` and ``biject_to`` know them.

Example::

    >>> from miniprob.distributions import constraints
    >>> constraints.positive.check(__import__("torch").tensor(2.0)).item()
    True
"""

from torch.distributions.constraints import *  # noqa: F403
from torch.distributions.constraints import Constraint as _Constraint
from torch.distributions.constraints import __all__  # noqa: F401
from torch.distributions.constraints import lower_cholesky as _lower_cholesky
from torch.distributions.constraints import positive as _positive


class _SoftplusPositive(type(_positive)):
    """Positive reals, reached by ``softplus`` rather than ``exp`` (Pyro's constraint: gentler
    gradients for scales that an optimizer moves)."""

    def __init__(self) -> None:
        super().__init__(lower_bound=0.0)


class _SoftplusLowerCholesky(type(_lower_cholesky)):
    """Lower Cholesky factors, their diagonal reached by ``softplus`` (Pyro's constraint)."""


class _UnitLowerCholesky(_Constraint):
    """Lower-triangular square matrices with ones on the diagonal (Pyro's constraint)."""

    event_dim = 2

    def check(self, value):
        lower = (value.tril() == value).reshape(value.shape[:-2] + (-1,)).min(-1)[0]
        unit = (value.diagonal(dim1=-2, dim2=-1) == 1).min(-1)[0]
        return lower & unit


softplus_positive = _SoftplusPositive()
softplus_lower_cholesky = _SoftplusLowerCholesky()
unit_lower_cholesky = _UnitLowerCholesky()
__all__ = [*__all__, "softplus_lower_cholesky", "softplus_positive", "unit_lower_cholesky"]
