"""Pyro's own unit tests run with miniprob standing in for ``pyro`` (see :mod:`.run`)."""
