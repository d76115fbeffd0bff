"""Pyro's ``pyro.poutine.util``: telling a subsampled plate's index site from the others, and
the default extend and escape functions of :class:`~miniprob.poutine.queue`, and the
validation switch under Pyro's names there.

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
from .trace_struct import Trace


def site_is_subsample(site: Message) -> bool:
    """Whether ``site`` is the index draw of a subsampled plate (a sample site of no density)."""
    return site["type"] == "sample" and isinstance(site["fn"], _Subsample)


def enum_extend(trace: Trace, msg: Message, num_samples: int | None = None) -> list[Trace]:
    """Copies of ``trace``, each with the site ``msg`` added at one value of its support.

    ``num_samples`` (None or negative: all) bounds the count as in Pyro, which returns up to
    ``num_samples + 1`` traces.

    Example::

        >>> import torch, miniprob as pyro, miniprob.distributions as dist
        >>> from miniprob import poutine
        >>> with poutine.trace() as tr:
        ...     _ = pyro.sample("k", dist.Categorical(torch.ones(3)))
        >>> [t.nodes["k"]["value"].item() for t in enum_extend(Trace(), tr.trace.nodes["k"])]
        [0, 1, 2]
    """
    if num_samples is None:
        num_samples = -1
    extended = []
    for i, value in enumerate(msg["fn"].enumerate_support(*msg["args"], **msg["kwargs"])):
        if i > num_samples >= 0:
            break
        site = msg.copy()
        site["value"] = value
        copy = trace.copy()
        copy.add_node(msg["name"], **site)
        extended.append(copy)
    return extended


def discrete_escape(trace: Trace, msg: Message) -> bool:
    """True at a latent sample site with enumerable support that ``trace`` lacks.

    Example::

        >>> import miniprob.distributions as dist
        >>> site = {"type": "sample", "is_observed": False, "name": "z",
        ...         "fn": dist.Normal(0.0, 1.0)}
        >>> discrete_escape(Trace(), site)
        False
    """
    return all_escape(trace, msg) and getattr(msg["fn"], "has_enumerate_support", False)


def all_escape(trace: Trace, msg: Message) -> bool:
    """True at a latent sample site that ``trace`` lacks.

    Example::

        >>> import miniprob.distributions as dist
        >>> site = {"type": "sample", "is_observed": False, "name": "z",
        ...         "fn": dist.Normal(0.0, 1.0)}
        >>> all_escape(Trace(), site)
        True
    """
    return (
        msg["type"] == "sample"
        and not msg["is_observed"]
        and msg["name"] is not None
        and msg["name"] not in trace
    )


__all__ = [
    "all_escape",
    "discrete_escape",
    "enum_extend",
    "enable_validation",
    "is_validation_enabled",
    "prune_subsample_sites",
    "site_is_subsample",
]
