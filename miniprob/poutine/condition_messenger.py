"""Pyro's path ``pyro.poutine.condition_messenger``: ``ConditionMessenger`` is
miniprob's :class:`~miniprob.poutine.condition` handler (one class under two names).

Example::

    >>> from miniprob import poutine
    >>> ConditionMessenger is poutine.condition
    True
"""

from .handlers import condition as ConditionMessenger  # noqa: N812 (Pyro's name)

__all__ = ["ConditionMessenger"]
