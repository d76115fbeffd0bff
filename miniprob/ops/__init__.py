"""Tensor operations at Pyro's ``pyro.ops`` path.

Only what Pyro's models index with lives here: :mod:`miniprob.ops.indexing`
gives ``Vindex``, the broadcasting form of advanced indexing that lets one
model body serve both sampled and enumerated discrete values.
"""
