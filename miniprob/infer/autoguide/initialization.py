"""Initialization strategies: where an autoguide's parameters start.

A strategy is a function of a model's sample site (the message dict, its ``fn`` already
expanded over the site's plates) that returns a constrained initial value for it. Autoguides
run their model once under :class:`InitMessenger`, which gives every latent site the value its
strategy returns; each strategy draws from the prior exactly as Pyro's does, so under one seed
the initial values are Pyro's.

Called without a site, a strategy returns itself with its options bound, as in Pyro:
``init_to_median(num_samples=31)`` and ``init_to_value(values={...})`` are strategies.

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob import poutine
    >>> def model():
    ...     pyro.sample("s", dist.LogNormal(0.0, 1.0))
    >>> tr = poutine.trace(InitMessenger(init_to_feasible)(model)).get_trace()
    >>> tr.nodes["s"]["value"].item()
    1.0
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.distributions import Distribution, Independent
from torch.distributions.constraint_registry import transform_to

from ...distributions.shape import MaskedDistribution
from ...poutine.plate import _Subsample
from ...runtime import Message, Messenger, _broadcast_to_plates

__all__ = [
    "InitMessenger",
    "init_to_feasible",
    "init_to_generated",
    "init_to_mean",
    "init_to_median",
    "init_to_sample",
    "init_to_uniform",
    "init_to_value",
]

Site = dict[str, Any]
InitFn = Callable[[Site], torch.Tensor]


def _is_multivariate(fn: Distribution) -> bool:
    while isinstance(fn, (Independent, MaskedDistribution)):
        fn = fn.base_dist
    return any(size > 1 for size in fn.event_shape)


def discrete_site_error(site: Site) -> ValueError:
    """The error for a discrete latent site that an autoguide was asked to cover."""
    name = site["name"]
    return ValueError(
        f"sample site '{name}' is discrete (support {site['fn'].support}): an autoguide covers "
        "continuous latents only. Mark it for enumeration (infer={'enumerate': 'parallel'}), "
        f"or hide it from the autoguide: AutoNormal(poutine.block(model, hide=['{name}']))"
    )


@contextmanager
def support_errors(site: Site) -> Iterator[None]:
    """Turn torch's ``NotImplementedError`` for a support without a bijection into an error
    that names the site (a discrete latent, most often) and says what to do."""
    try:
        yield
    except NotImplementedError:
        if site["fn"].support.is_discrete:
            raise discrete_site_error(site) from None
        raise ValueError(
            f"sample site '{site['name']}': its support {site['fn'].support} has no bijection "
            "from the real numbers, so an autoguide cannot cover it (reparameterize or hide "
            "the site)"
        ) from None


def init_to_feasible(site: Site | None = None) -> torch.Tensor | InitFn:
    """A feasible point: the image of zero under the support's transform (a prior draw sets
    the shape).

    Example::

        >>> import miniprob.distributions as dist
        >>> init_to_feasible({"name": "x", "fn": dist.Uniform(0.0, 4.0)}).item()
        2.0
    """
    if site is None:
        return init_to_feasible
    value = site["fn"].sample().detach()
    t = transform_to(site["fn"].support)
    return t(torch.zeros_like(t.inv(value)))


def init_to_sample(site: Site | None = None) -> torch.Tensor | InitFn:
    """A draw from the prior.

    Example::

        >>> import miniprob.distributions as dist
        >>> init_to_sample({"name": "x", "fn": dist.Normal(0.0, 1.0).expand([3])}).shape
        torch.Size([3])
    """
    if site is None:
        return init_to_sample
    return site["fn"].sample().detach()


def init_to_median(
    site: Site | None = None, num_samples: int = 15, *, fallback: InitFn | None = init_to_feasible
) -> torch.Tensor | InitFn:
    """The median of ``num_samples`` prior draws (``fallback`` for multivariate sites, or
    where the median is not finite or not in the support).

    Example::

        >>> import torch, miniprob.distributions as dist
        >>> _ = torch.manual_seed(0)
        >>> init_to_median({"name": "x", "fn": dist.Normal(0.0, 1.0)}, num_samples=1001).abs() < 0.1
        tensor(True)
    """
    if site is None:
        return functools.partial(init_to_median, num_samples=num_samples, fallback=fallback)
    fn = site["fn"]
    if _is_multivariate(fn):
        return init_to_feasible(site)
    try:
        value = fn.sample(sample_shape=(num_samples,)).median(dim=0)[0]
        if torch.isnan(value).any():
            raise ValueError
        if hasattr(fn, "_validate_sample"):
            fn._validate_sample(value)
        return value
    except (RuntimeError, ValueError):
        pass
    if fallback is not None:
        return fallback(site)
    raise ValueError(f"init_to_median: no median for site '{site['name']}' and no fallback")


def init_to_mean(
    site: Site | None = None, *, fallback: InitFn | None = init_to_median
) -> torch.Tensor | InitFn:
    """The prior mean (``fallback`` where it is undefined, e.g. a Cauchy's).

    Example::

        >>> import miniprob.distributions as dist
        >>> init_to_mean({"name": "x", "fn": dist.Gamma(6.0, 2.0)}).item()
        3.0
    """
    if site is None:
        return functools.partial(init_to_mean, fallback=fallback)
    fn = site["fn"]
    try:
        value = fn.mean.detach()
        if torch.isnan(value).any():
            raise ValueError
        if hasattr(fn, "_validate_sample"):
            fn._validate_sample(value)
        return value
    except (NotImplementedError, ValueError):
        pass
    if fallback is not None:
        return fallback(site)
    raise ValueError(f"init_to_mean: no mean for site '{site['name']}' and no fallback")


def init_to_uniform(site: Site | None = None, radius: float = 2.0) -> torch.Tensor | InitFn:
    """A point drawn uniformly from ``(-radius, radius)`` in the unconstrained space.

    Example::

        >>> import miniprob.distributions as dist
        >>> value = init_to_uniform({"name": "s", "fn": dist.LogNormal(0.0, 1.0)}, radius=1.0)
        >>> bool(0.36 < value < 2.72)
        True
    """
    if site is None:
        return functools.partial(init_to_uniform, radius=radius)
    value = site["fn"].sample().detach()
    t = transform_to(site["fn"].support)
    return t(torch.rand_like(t.inv(value)) * (2 * radius) - radius)


def init_to_value(
    site: Site | None = None,
    values: dict[str, torch.Tensor] | None = None,
    *,
    fallback: InitFn | None = init_to_uniform,
) -> torch.Tensor | InitFn:
    """The value given for the site in ``values``; ``fallback`` for the other sites.

    A value outside the site's support is an error naming the site; an autoguide also refuses
    names in ``values`` that are not latent sites of its model (a misspelt name would
    otherwise be ignored).

    Example::

        >>> import torch, miniprob.distributions as dist
        >>> init = init_to_value(values={"x": torch.tensor(0.5)})
        >>> init({"name": "x", "fn": dist.Normal(0.0, 1.0)}).item()
        0.5
    """
    values = {} if values is None else values
    if site is None:
        return functools.partial(init_to_value, values=values, fallback=fallback)
    name = site["name"]
    if name in values:
        value = torch.as_tensor(values[name])
        support = site["fn"].support
        inside = support.check(value)
        if not bool(inside.all()):
            raise ValueError(
                f"init_to_value: the value given for site '{name}' is outside its support "
                f"{support} (at {int((~inside).sum())} of {inside.numel()} places)"
            )
        return value
    if fallback is not None:
        return fallback(site)
    raise ValueError(f"init_to_value: no value given for site '{name}' and no fallback")


class _InitToGenerated:
    """Calls ``generate()`` for a fresh strategy at each run of the model (a run starts when a
    site is seen again)."""

    def __init__(self, generate: Callable[[], InitFn]) -> None:
        self.generate = generate
        self._init: InitFn | None = None
        self._seen: set[str] = set()

    def __call__(self, site: Site) -> torch.Tensor:
        if self._init is None or site["name"] in self._seen:
            self._init = self.generate()
            self._seen = set()
        self._seen.add(site["name"])
        return self._init(site)


def init_to_generated(
    site: Site | None = None, generate: Callable[[], InitFn] = lambda: init_to_uniform
) -> torch.Tensor | InitFn:
    """The strategy ``generate()`` returns, made afresh once per run of the model (e.g. an
    ``init_to_value`` with random values, shared by all sites of one run).

    Example::

        >>> import torch, miniprob.distributions as dist
        >>> init = init_to_generated(generate=lambda: init_to_value(values={"x": torch.ones(())}))
        >>> init({"name": "x", "fn": dist.Normal(0.0, 1.0)}).item()
        1.0
    """
    init = _InitToGenerated(generate)
    return init if site is None else init(site)


def init_values(init_fn: Any) -> dict[str, torch.Tensor] | None:
    """The ``values`` of an ``init_to_value`` strategy (None for any other strategy)."""
    if isinstance(init_fn, functools.partial) and init_fn.func is init_to_value:
        return init_fn.keywords.get("values") or {}
    return None


class InitMessenger(Messenger):
    """Gives each latent sample site the value ``init_fn(site)`` instead of a draw.

    :param init_fn: an initialization strategy (see the module docstring).

    Example::

        >>> import torch, miniprob as pyro, miniprob.distributions as dist
        >>> with InitMessenger(init_to_mean):
        ...     pyro.sample("x", dist.Normal(3.0, 1.0)).item()
        3.0
    """

    def __init__(self, init_fn: InitFn) -> None:
        super().__init__()
        self.init_fn = init_fn

    def process_message(self, msg: Message) -> None:
        if msg["type"] != "sample" or msg["value"] is not None or msg["is_observed"]:
            return
        if isinstance(msg["fn"], _Subsample):
            return
        if msg["fn"].support.is_discrete:
            if msg["infer"].get("enumerate"):
                return  # left to enumeration: not part of the guide
            raise discrete_site_error(msg)
        # The strategy sees the site as Pyro's does: its distribution covers its plates.
        _broadcast_to_plates(msg)
        with torch.no_grad(), support_errors(msg):
            value = self.init_fn(msg)
        expected = msg["fn"].batch_shape + msg["fn"].event_shape
        if not isinstance(value, torch.Tensor) or value.shape != expected:
            found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"initialization of site '{msg['name']}': expected a tensor of shape "
                f"{tuple(expected)}, {self.init_fn!r} gave {found}"
            )
        msg["value"] = value
