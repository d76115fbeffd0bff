"""Pyro's path ``pyro.poutine.substitute_messenger``: ``SubstituteMessenger`` is
miniprob's :class:`~miniprob.poutine.substitute` handler (one class under two names).

Example::

    >>> from miniprob import poutine
    >>> SubstituteMessenger is poutine.substitute
    True
"""

from .handlers import substitute as SubstituteMessenger  # noqa: N812 (Pyro's name)

__all__ = ["SubstituteMessenger"]
