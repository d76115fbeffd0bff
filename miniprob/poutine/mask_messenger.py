"""Pyro's path ``pyro.poutine.mask_messenger``: ``MaskMessenger`` is
miniprob's :class:`~miniprob.poutine.mask` handler (one class under two names).

Example::

    >>> from miniprob import poutine
    >>> MaskMessenger is poutine.mask
    True
"""

from .handlers import mask as MaskMessenger  # noqa: N812 (Pyro's name)

__all__ = ["MaskMessenger"]
