"""Distributions: every ``torch.distributions`` class with Pyro's shape helpers, plus ``Delta``.

``miniprob.distributions.Normal`` is a subclass of ``torch.distributions.Normal`` that adds
``to_event``, ``expand_by``, ``mask`` and ``__call__`` (see :mod:`.shape`), through
:class:`TorchDistribution`, the base class of custom distributions. Plain torch distributions
are accepted at sample sites too.

Example::

    >>> import torch
    >>> import miniprob.distributions as dist
    >>> d = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    >>> isinstance(d, torch.distributions.Independent)
    True
"""

import functools

import torch.distributions as _td

# Re-exported through __all__, which is built below.
from torch.distributions import Distribution, kl_divergence, register_kl  # noqa: F401

from . import constraints, transforms  # noqa: F401
from .delta import Delta  # noqa: F401
from .empirical import Empirical  # noqa: F401
from .fast_paths import FAST_METHODS
from .shape import (  # noqa: F401
    Independent,
    MaskedDistribution,
    ShapeHelpers,
    TorchDistribution,
)


def _with_helpers(cls: type) -> type:
    doc = (
        f"``torch.distributions.{cls.__name__}`` with Pyro's shape helpers (``to_event``, "
        f"``expand_by``, ``mask``); see torch's documentation for its arguments."
    )

    @functools.wraps(cls.__init__)  # keeps torch's signature for inspect.signature
    def __init__(self, *args, validate_args=None, **kwargs):
        # torch hands validate_args on to the distributions it builds inside (a LogNormal's
        # Normal, a Beta's Dirichlet): None would let those validate their arguments at every
        # construction and every log_prob. False, unless the caller asks for validation.
        validate_args = False if validate_args is None else validate_args
        cls.__init__(self, *args, validate_args=validate_args, **kwargs)

    attrs = {"__module__": __name__, "__doc__": doc, "__init__": __init__}
    attrs.update(FAST_METHODS.get(cls.__name__, {}))  # bitwise-exact shortcuts (Normal, ...)
    return type(cls.__name__, (TorchDistribution, cls), attrs)


_WRAPPED = {}
for _name in _td.__all__:
    _cls = getattr(_td, _name)
    if (
        isinstance(_cls, type)
        and issubclass(_cls, Distribution)
        and _cls not in (Distribution, _td.Independent, _td.ExponentialFamily)
    ):
        _WRAPPED[_name] = _with_helpers(_cls)
globals().update(_WRAPPED)

__all__ = sorted(
    [
        *_WRAPPED,
        "Delta",
        "Distribution",
        "Empirical",
        "Independent",
        "MaskedDistribution",
        "ShapeHelpers",
        "TorchDistribution",
        "constraints",
        "enable_validation",
        "is_validation_enabled",
        "kl_divergence",
        "register_kl",
        "testing",
        "transforms",
        "util",
        "validation_enabled",
    ]
)

# Pyro's paths: ``pyro.distributions.util``, ``.testing.fakes`` and the validation switch.
from . import testing, util  # noqa: E402, F401
from .testing import fakes  # noqa: E402, F401
from .util import enable_validation, is_validation_enabled, validation_enabled  # noqa: E402, F401
