"""Pyro's path ``pyro.poutine.replay_messenger``: ``ReplayMessenger`` is
miniprob's :class:`~miniprob.poutine.replay` handler (one class under two names).

Example::

    >>> from miniprob import poutine
    >>> ReplayMessenger is poutine.replay
    True
"""

from .handlers import replay as ReplayMessenger  # noqa: N812 (Pyro's name)

__all__ = ["ReplayMessenger"]
