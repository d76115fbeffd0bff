"""Pyro's import path for the handler base class: ``from miniprob.poutine.messenger import
Messenger`` (it lives in :mod:`miniprob.runtime`).

Example::

    >>> from miniprob.poutine.messenger import Messenger
    >>> Messenger.__module__
    'miniprob.runtime'
"""

from ..runtime import Messenger

__all__ = ["Messenger"]
