"""Pyro's path ``pyro.poutine.indep_messenger``: ``CondIndepStackFrame``, a plate as a site
sees it (defined in :mod:`miniprob.runtime`).

Example::

    >>> CondIndepStackFrame("data", -1, 10, 0).vectorized
    True
"""

from ..runtime import CondIndepStackFrame

__all__ = ["CondIndepStackFrame"]
