"""Pyro's fakes: distributions that have ``rsample`` but say they do not, so inference takes
the score-function path on them (to test or compare gradient estimators).

Example::

    >>> NonreparameterizedNormal(0.0, 1.0).has_rsample
    False
"""

from .. import Beta, Dirichlet, Gamma, Normal


class NonreparameterizedBeta(Beta):
    """A ``Beta`` whose gradients go through the score function."""

    has_rsample = False


class NonreparameterizedDirichlet(Dirichlet):
    """A ``Dirichlet`` whose gradients go through the score function."""

    has_rsample = False


class NonreparameterizedGamma(Gamma):
    """A ``Gamma`` whose gradients go through the score function."""

    has_rsample = False


class NonreparameterizedNormal(Normal):
    """A ``Normal`` whose gradients go through the score function."""

    has_rsample = False


__all__ = [
    "NonreparameterizedBeta",
    "NonreparameterizedDirichlet",
    "NonreparameterizedGamma",
    "NonreparameterizedNormal",
]
