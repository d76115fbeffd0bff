"""Pyro's ``pyro.distributions.testing``: distributions for tests (see :mod:`.fakes`)."""
