"""Pyro's ``pyro.contrib`` import paths for the pieces miniprob has (see each subpackage)."""
