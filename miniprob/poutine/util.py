"""Pyro's ``pyro.poutine.util``: telling a subsampled plate's index site from the others, and
the validation switch under Pyro's names there.

Example::

    >>> import miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob import poutine
    >>> def model():
    ...     with pyro.plate("data", 10, subsample_size=3):
    ...         pyro.sample("x", dist.Normal(0.0, 1.0))
    >>> tr = poutine.trace(model).get_trace()
    >>> [name for name, site in tr.nodes.items() if site_is_subsample(site)]
    ['data']
    >>> list(prune_subsample_sites(tr).nodes)
    ['_INPUT', 'x', '_RETURN']
"""

from __future__ import annotations

from ..runtime import Message
from ..validation import enable_validation, is_validation_enabled
from .plate import _Subsample, prune_subsample_sites


def site_is_subsample(site: Message) -> bool:
    """Whether ``site`` is the index draw of a subsampled plate (a sample site of no density)."""
    return site["type"] == "sample" and isinstance(site["fn"], _Subsample)


__all__ = [
    "enable_validation",
    "is_validation_enabled",
    "prune_subsample_sites",
    "site_is_subsample",
]
