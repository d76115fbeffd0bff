"""Learning-rate schedulers over a :class:`PyroOptim`: ``ExponentialLR({"optimizer":
torch.optim.Adam, "optim_args": {"lr": 0.01}, "gamma": 0.9})``, then ``scheduler.step()`` once
per epoch.

Example::

    >>> import torch, miniprob as pyro
    >>> from miniprob.optim import ExponentialLR
    >>> pyro.clear_param_store()
    >>> args = {"optimizer": torch.optim.SGD, "optim_args": {"lr": 1.0}, "gamma": 0.5}
    >>> sched = ExponentialLR(args)
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

    def __init__(
        self, scheduler_constructor: type, optim_args: dict, clip_args: dict | None = None
    ):
        args = dict(optim_args)
        try:
            optimizer = args.pop("optimizer")
            inner_args = args.pop("optim_args")
        except KeyError as e:
            raise ValueError(
                f"{scheduler_constructor.__name__}: optim_args needs the key {e}"
            ) from None
        super().__init__(optimizer, inner_args, clip_args)
        self.scheduler_constructor = scheduler_constructor
        self.scheduler_args = args
        self._schedulers: dict[int, Any] = {}
        self._pending_schedulers: dict[Any, dict] = {}
        # Scheduler steps taken, and the step at which each parameter first appeared: a
        # parameter that appears later starts its own schedule, as with Pyro's one scheduler
        # per parameter, so it must not join an optimizer whose rate has already decayed.
        self._epoch = 0
        self._joined: dict[str, int] = {}

    # What schedules set (the rate; the momentum too, for OneCycleLR and CyclicLR): saved
    # values of these are the schedule's, not the parameter's own.
    _scheduled_keys = ("lr", "momentum", "betas")

    def _group_key(self, name: str | None, args: dict, restarted: bool = False) -> Any:
        if name is None:
            epoch = self._epoch
        elif restarted or name not in self._joined:
            # A new leaf (first seen, or replacing one with no saved state waiting) starts its
            # own schedule now, as Pyro's new optimizer and scheduler for it would.
            epoch = self._joined[name] = self._epoch
        else:
            epoch = self._joined[name]
        return (epoch, super()._group_key(name, args, restarted))

    def _add_optimizer(self, key: Any, opt: torch.optim.Optimizer) -> None:
        # The scheduler first: if its arguments are wrong, nothing is registered.
        scheduler = self.scheduler_constructor(opt, **self.scheduler_args)
        replaced = self._optimizers.get(key)
        if replaced is not None:
            self._schedulers.pop(id(replaced), None)
        super()._add_optimizer(key, opt)
        self._schedulers[id(opt)] = scheduler
        pending = self._pending_schedulers.pop(key, None)
        if pending is not None:
            _load_scheduler_state(scheduler, pending)

    def get_scheduler_state(self) -> dict:
        """The torch schedulers' own state (``last_epoch``, ...), one per torch optimizer, and
        the step at which each parameter joined. :meth:`get_state` holds the optimizers' state.

        Example::

            >>> import torch
            >>> from miniprob.optim import StepLR
            >>> sched = StepLR(
            ...     {"optimizer": torch.optim.SGD, "optim_args": {"lr": 1.0}, "step_size": 2}
            ... )
            >>> sched.get_scheduler_state()
            {'epoch': 0, 'joined': {}, 'schedulers': {}}
        """
        keys = {id(opt): key for key, opt in self._optimizers.items()}
        schedulers = dict(self._pending_schedulers)
        for opt_id, scheduler in self._schedulers.items():
            schedulers[keys[opt_id]] = scheduler.state_dict()
        return {"epoch": self._epoch, "joined": dict(self._joined), "schedulers": schedulers}

    def set_scheduler_state(self, state: dict) -> None:
        """Load :meth:`get_scheduler_state`; schedulers not created yet get theirs on creation.

        Going back to an earlier state forgets what came after it: optimizers (and their
        schedulers) created after that state was saved are dropped, with their parameters.
        """
        self._epoch = state["epoch"]
        self._joined = dict(state["joined"])
        saved = state["schedulers"]
        for key, opt in list(self._optimizers.items()):
            if key not in saved and _created_since(key, self._epoch):
                for p in list(opt.param_groups[0]["params"]):
                    self._forget(p)
                del self._optimizers[key]
                self._schedulers.pop(id(opt), None)
        by_key = {key: self._schedulers.get(id(opt)) for key, opt in self._optimizers.items()}
        self._pending_schedulers = {}
        for key, per in saved.items():
            scheduler = by_key.get(key)
            if scheduler is None:
                self._pending_schedulers[key] = per
            else:
                _load_scheduler_state(scheduler, per)

    def step(self, *args: Any, **kwargs: Any) -> None:
        """Advance every scheduler (pass the loss to ``ReduceLROnPlateau``)."""
        for scheduler in self._schedulers.values():
            scheduler.step(*args, **kwargs)
        self._epoch += 1


def _created_since(key: Any, epoch: int) -> bool:
    """Whether the optimizer under ``key`` (``(join epoch, ...)``) started at ``epoch`` or
    later, that is after a state saved at ``epoch`` (which holds every earlier one)."""
    return isinstance(key, tuple) and isinstance(key[0], int) and key[0] >= epoch


def _load_scheduler_state(scheduler: Any, state: dict) -> None:
    scheduler.load_state_dict(state)
    # Creating a scheduler may have set the learning rate for epoch 0: put back the saved one.
    last_lr = state.get("_last_lr")
    if last_lr is not None:
        for group, lr in zip(scheduler.optimizer.param_groups, last_lr, strict=False):
            group["lr"] = lr
