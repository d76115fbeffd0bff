"""Learning-rate schedulers over a :class:`PyroOptim`: ``ExponentialLR({"optimizer": torch.optim.Adam,
"optim_args": {"lr": 0.01}, "gamma": 0.9})``, then ``scheduler.step()`` once per epoch.

Example::

    >>> import torch, miniprob as pyro
    >>> from miniprob.optim import ExponentialLR
    >>> pyro.clear_param_store()
    >>> sched = ExponentialLR({"optimizer": torch.optim.SGD, "optim_args": {"lr": 1.0}, "gamma": 0.5})
    >>> w = pyro.param("w", torch.tensor(0.0)); w.sum().backward()
    >>> sched([w.unconstrained()]); sched.step()
    >>> sched.optimizers()[0].param_groups[0]["lr"]
    0.5
"""

from __future__ import annotations

from typing import Any

import torch

from .optim import PyroOptim


class PyroLRScheduler(PyroOptim):
    """A torch LR scheduler applied to the torch optimizers of a :class:`PyroOptim`.

    :param scheduler_constructor: a ``torch.optim.lr_scheduler`` class.
    :param optim_args: ``{"optimizer": torch optimizer class, "optim_args": dict or callable,
        **scheduler arguments}``.
    """

    def __init__(self, scheduler_constructor: type, optim_args: dict, clip_args: dict | None = None):
        args = dict(optim_args)
        try:
            optimizer = args.pop("optimizer")
            inner_args = args.pop("optim_args")
        except KeyError as e:
            raise ValueError(f"{scheduler_constructor.__name__}: optim_args needs the key {e}") from None
        super().__init__(optimizer, inner_args, clip_args)
        self.scheduler_constructor = scheduler_constructor
        self.scheduler_args = args
        self._schedulers: dict[int, Any] = {}

    def _register(self, p: torch.Tensor) -> torch.optim.Optimizer:
        opt = super()._register(p)
        if id(opt) not in self._schedulers:
            self._schedulers[id(opt)] = self.scheduler_constructor(opt, **self.scheduler_args)
        return opt

    def step(self, *args: Any, **kwargs: Any) -> None:
        """Advance every scheduler (pass the loss to ``ReduceLROnPlateau``)."""
        for scheduler in self._schedulers.values():
            scheduler.step(*args, **kwargs)
