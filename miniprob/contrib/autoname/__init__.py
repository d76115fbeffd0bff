"""Pyro's import path ``pyro.contrib.autoname`` for ``scope`` and ``name_count``, which live in
:mod:`miniprob.poutine.scope` (one class, two import paths).

Example::

    >>> import miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob import poutine
    >>> from miniprob.contrib.autoname import scope
    >>> with poutine.trace() as tr, scope(prefix="layer"):
    ...     _ = pyro.sample("w", dist.Normal(0.0, 1.0))
    >>> list(tr.trace.nodes)
    ['layer/w']
"""

from ...poutine.scope import name_count, scope

__all__ = ["name_count", "scope"]
