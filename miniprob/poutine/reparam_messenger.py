"""``reparam``: the handler that applies reparameterizers (:mod:`miniprob.infer.reparam`), at
Pyro's module path (``ReparamMessenger`` is Pyro's name for the same class)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..runtime import Message, Messenger, _broadcast_to_plates


class reparam(Messenger):
    """Rewrite each sample site that ``config`` names into the auxiliary sites of its
    reparameterizer (:class:`~miniprob.infer.reparam.Reparam`).

    :param fn: the stochastic function.
    :param config: a dict from site names to reparameterizers, or a function from a site
        (message) to a reparameterizer or None.

    Used as a function wrapper (not as a context manager) it shows the reparameterizers the
    model's arguments (``Reparam.args_kwargs``), as in Pyro.

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> from miniprob import poutine
        >>> from miniprob.infer.reparam import LocScaleReparam
        >>> def model():
        ...     with pyro.plate("groups", 3):
        ...         return pyro.sample("theta", dist.Normal(0.0, 5.0))
        >>> config = lambda site: LocScaleReparam(0.0) if site["name"] == "theta" else None
        >>> tr = poutine.trace(poutine.reparam(model, config=config)).get_trace()
        >>> tr.nodes["theta_decentered"]["value"].shape, tr.nodes["theta"]["is_observed"]
        (torch.Size([3]), True)
    """

    def __init__(self, fn: Callable | None = None, config: dict | Callable | None = None) -> None:
        if isinstance(fn, dict):
            fn, config = None, fn
        super().__init__(fn)
        if not (isinstance(config, dict) or callable(config)):
            raise TypeError(
                "reparam: 'config' should be a dict of site names to reparameterizers or a "
                f"function from a site to one, got {type(config).__name__}"
            )
        self.config = config
        self._args_kwargs: tuple[tuple, dict] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fn is None:
            return super().__call__(*args, **kwargs)
        self._args_kwargs = args, kwargs
        try:
            return super().__call__(*args, **kwargs)
        finally:
            self._args_kwargs = None

    def process_message(self, msg: Message) -> None:
        if msg["type"] != "sample" or type(msg["fn"]).__name__ == "_Subsample":
            return
        config = self.config
        strategy = config.get(msg["name"]) if isinstance(config, dict) else config(msg)
        if strategy is None:
            return
        # The reparameterizer sees the distribution broadcast to the plates inside, as in Pyro.
        if msg["cond_indep_stack"]:
            _broadcast_to_plates(msg)
        strategy.args_kwargs = self._args_kwargs
        try:
            new = strategy.apply(
                {
                    "name": msg["name"],
                    "fn": msg["fn"],
                    "value": msg["value"],
                    "is_observed": msg["is_observed"],
                }
            )
        finally:
            strategy.args_kwargs = None
        old_value = msg["value"]
        if old_value is not None and new["value"] is not None and new["value"] is not old_value:
            if new["value"].shape != old_value.shape:
                raise ValueError(
                    f"reparam at site '{msg['name']}': {type(strategy).__name__} changed the "
                    f"value's shape from {tuple(old_value.shape)} to {tuple(new['value'].shape)}"
                )
        msg["fn"] = new["fn"]
        msg["value"] = new["value"]
        msg["is_observed"] = new["is_observed"]


ReparamMessenger = reparam

__all__ = ["ReparamMessenger", "reparam"]
