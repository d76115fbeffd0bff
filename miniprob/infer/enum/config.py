"""``config_enumerate``: mark every discrete sample site of a model or guide for enumeration."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...poutine.plate import _Subsample
from ...poutine.rewrite import infer_config
from ...runtime import Message


def config_enumerate(
    guide: Callable | None = None,
    default: str | None = "parallel",
    expand: bool = False,
    num_samples: int | None = None,
    tmc: str = "diagonal",
) -> Any:
    """Mark each unobserved sample site whose distribution has a finite support
    (``has_enumerate_support``) with ``infer={"enumerate": default, "expand": expand}``, as
    Pyro's ``config_enumerate``; marks a site already carries are kept. A function or a
    decorator (``@config_enumerate`` or ``@config_enumerate(expand=True)``).

    Local Monte Carlo sampling (``num_samples=``) is not supported.

    Example::

        >>> import torch, miniprob as pyro, miniprob.distributions as dist
        >>> from miniprob.poutine import trace
        >>> @config_enumerate
        ... def model():
        ...     pyro.sample("z", dist.Bernoulli(0.5))
        ...     pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> tr = trace(model).get_trace()
        >>> tr.nodes["z"]["infer"], tr.nodes["x"]["infer"]
        ({'enumerate': 'parallel', 'expand': False}, {})
    """
    if default not in ("parallel", "sequential", "flat", None):
        raise ValueError(
            f"config_enumerate: default must be 'parallel', 'sequential' or None, got {default!r}"
        )
    if expand not in (True, False):
        raise ValueError(f"config_enumerate: expand must be True or False, got {expand!r}")
    if num_samples is not None:
        raise NotImplementedError(
            "config_enumerate: local sampling (num_samples=) is not supported"
        )
    if guide is None:
        return lambda fn: config_enumerate(fn, default=default, expand=expand)

    def config(msg: Message) -> dict:
        if msg["type"] != "sample" or msg["is_observed"] or isinstance(msg["fn"], _Subsample):
            return {}
        if not getattr(msg["fn"], "has_enumerate_support", False):
            return {}
        infer = msg["infer"]
        return {"enumerate": infer.get("enumerate", default), "expand": infer.get("expand", expand)}

    return infer_config(guide, config_fn=config)
