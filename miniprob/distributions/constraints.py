"""Constraints as objects: torch's ``torch.distributions.constraints``, re-exported.

They are the very same objects, so ``transform_to`` and ``biject_to`` know them.

Example::

    >>> from miniprob.distributions import constraints
    >>> constraints.positive.check(__import__("torch").tensor(2.0)).item()
    True
"""

from torch.distributions.constraints import *  # noqa: F403
from torch.distributions.constraints import __all__  # noqa: F401
