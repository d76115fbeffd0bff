"""Pyro's path ``pyro.poutine.trace_messenger``: ``TraceMessenger`` is
miniprob's :class:`~miniprob.poutine.trace` handler (one class under two names).

Example::

    >>> from miniprob import poutine
    >>> TraceMessenger is poutine.trace
    True
"""

from .handlers import trace as TraceMessenger  # noqa: N812 (Pyro's name)

__all__ = ["TraceMessenger"]
