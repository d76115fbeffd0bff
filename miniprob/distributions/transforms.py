"""Bijections: torch's ``torch.distributions.transforms`` with ``transform_to``/``biject_to``.

Example::

    >>> import torch
    >>> from miniprob.distributions import constraints, transforms
    >>> t = transforms.transform_to(constraints.positive)
    >>> t(torch.tensor(0.0)).item()
    1.0
"""

from torch.distributions.constraint_registry import biject_to, transform_to  # noqa: F401
from torch.distributions.transforms import *  # noqa: F403
from torch.distributions.transforms import __all__ as _torch_all

__all__ = [*_torch_all, "biject_to", "transform_to"]
