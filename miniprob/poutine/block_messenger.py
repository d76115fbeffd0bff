"""Pyro's path ``pyro.poutine.block_messenger``: ``BlockMessenger`` is
miniprob's :class:`~miniprob.poutine.block` handler (one class under two names).

Example::

    >>> from miniprob import poutine
    >>> BlockMessenger is poutine.block
    True
"""

from .handlers import block as BlockMessenger  # noqa: N812 (Pyro's name)

__all__ = ["BlockMessenger"]
