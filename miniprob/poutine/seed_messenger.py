"""Pyro's path ``pyro.poutine.seed_messenger``: ``SeedMessenger`` is
miniprob's :class:`~miniprob.poutine.seed` handler (one class under two names).

Example::

    >>> from miniprob import poutine
    >>> SeedMessenger is poutine.seed
    True
"""

from .handlers import seed as SeedMessenger  # noqa: N812 (Pyro's name)

__all__ = ["SeedMessenger"]
