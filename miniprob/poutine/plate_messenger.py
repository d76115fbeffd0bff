"""Pyro's path ``pyro.poutine.plate_messenger``: ``PlateMessenger`` is miniprob's
:class:`~miniprob.poutine.plate.plate` (one class under two names), and ``block_plate``.

Example::

    >>> import miniprob as pyro
    >>> PlateMessenger is pyro.plate
    True
"""

from .plate import plate as PlateMessenger  # noqa: N812 (Pyro's name)
from .plate_helpers import block_plate

__all__ = ["PlateMessenger", "block_plate"]
