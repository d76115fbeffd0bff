"""Pyro's module path ``pyro.infer.autoguide.guides``: the autoguide classes, re-exported.

Example::

    >>> from miniprob.infer.autoguide.guides import AutoNormal
    >>> AutoNormal.__module__
    'miniprob.infer.autoguide.normal'
"""

from .base import AutoGuide
from .continuous import (
    AutoContinuous,
    AutoDiagonalNormal,
    AutoLaplaceApproximation,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
)
from .delta import AutoDelta
from .guide_list import AutoCallable, AutoGuideList
from .normal import AutoNormal

__all__ = [
    "AutoCallable",
    "AutoContinuous",
    "AutoDelta",
    "AutoDiagonalNormal",
    "AutoGuide",
    "AutoGuideList",
    "AutoLaplaceApproximation",
    "AutoLowRankMultivariateNormal",
    "AutoMultivariateNormal",
    "AutoNormal",
]
