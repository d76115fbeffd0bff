"""Pyro's path ``pyro.poutine.scale_messenger``: ``ScaleMessenger`` is
miniprob's :class:`~miniprob.poutine.scale` handler (one class under two names).

Example::

    >>> from miniprob import poutine
    >>> ScaleMessenger is poutine.scale
    True
"""

from .handlers import scale as ScaleMessenger  # noqa: N812 (Pyro's name)

__all__ = ["ScaleMessenger"]
