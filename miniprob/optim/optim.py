"""Pyro-style optimizers: ``Adam({"lr": 0.01}, clip_args={"clip_norm": 10.0})``.

A :class:`PyroOptim` is called with the unconstrained leaves seen in a step and updates each of
them. It is numerically the same as Pyro's one-``torch.optim``-instance-per-parameter scheme,
but groups parameters that share hyperparameters into one torch optimizer, which is faster
(one ``step`` call per group). Per-parameter clipping (``clip_norm``/``clip_value``) happens
before the step, one parameter at a time, as in Pyro. State is keyed by parameter name.

Example::

    >>> import torch, miniprob as pyro
    >>> from miniprob.optim import Adam
    >>> pyro.clear_param_store()
    >>> w = pyro.param("w", torch.tensor(1.0))
    >>> (w ** 2).backward()
    >>> opt = Adam({"lr": 0.1})
    >>> opt([w.unconstrained()])
    >>> round(pyro.param("w").item(), 4)
    0.9
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.nn.utils import clip_grad_norm_, clip_grad_value_

from ..atomic import atomic_save
from ..params import get_param_store
from .adam_update import FOREACH_MIN_PARAMS, adam_step

OptimArgs = dict[str, Any] | Callable[..., dict[str, Any]]
ClipArgs = dict[str, float] | Callable[..., dict[str, float]]

# torch optimizers whose multi-tensor ("foreach") update gives bitwise the same parameters as
# their default per-tensor loop on CPU (checked on torch 2.13, with weight decay, amsgrad,
# maximize, momentum and nesterov); from FOREACH_MIN_PARAMS parameters in a group on, the
# multi-tensor update is the faster one. Adam has its own lean update (adam_update.py).
_FOREACH_SAME = (torch.optim.AdamW, torch.optim.SGD)


def _allowed_args(constructor: Callable) -> set[str] | None:
    try:
        sig = inspect.signature(constructor)
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {n for n in sig.parameters if n not in ("self", "params")}


def _freeze(args: dict) -> Any:
    try:
        key = tuple(sorted(args.items()))
        hash(key)
        return key
    except TypeError:
        return repr(sorted(args.items()))


def _call_per_param(fn: Callable[..., Any], name: str | None) -> Any:
    """Call a per-parameter callable as Pyro does: with one positional parameter it gets the
    name as ``nn.Module.named_parameters`` writes it (``'encoder.fc.weight'``), with two it
    gets ``(module_name, param_name)`` (``('encoder', 'fc.weight')``; ``('w', 'w')`` outside a
    module)."""
    full = name or ""
    try:
        params = inspect.signature(fn).parameters.values()
        positional = [
            p
            for p in params
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
    except (TypeError, ValueError):
        positional = []
    if len(positional) == 2:
        module, sep, param = full.partition("$$$")
        return fn(module, param if sep else full)
    return fn(full.replace("$$$", "."))


def _checked_clip_args(clip_args: Any, where: str) -> dict[str, float]:
    if not isinstance(clip_args, dict):
        raise TypeError(f"{where} must be a dict, got {clip_args!r}")
    unknown = set(clip_args) - {"clip_norm", "clip_value"}
    if unknown:
        raise ValueError(
            f"{where}: unknown keys {sorted(unknown)}; expected clip_norm and/or clip_value"
        )
    for key, value in clip_args.items():
        if not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"{where}['{key}'] must be a positive number, got {value!r}")
    return clip_args


class PyroOptim:
    """A torch optimizer applied per parameter, with optional per-parameter clipping.

    :param optim_constructor: a ``torch.optim.Optimizer`` class (or a compatible factory).
    :param optim_args: a dict of its arguments, or a callable ``param_name -> dict`` (or
        ``(module_name, param_name) -> dict``).
    :param clip_args: ``{"clip_norm": x}`` and/or ``{"clip_value": y}``, or a callable that
        returns such a dict per parameter, called like ``optim_args``.
    """

    def __init__(
        self,
        optim_constructor: Callable[..., torch.optim.Optimizer],
        optim_args: OptimArgs,
        clip_args: ClipArgs | None = None,
    ) -> None:
        self.pt_optim_constructor = optim_constructor
        self._allowed = _allowed_args(optim_constructor)
        if not callable(optim_args):
            if not isinstance(optim_args, dict):
                raise TypeError(
                    f"optim_args must be a dict or a callable, got {type(optim_args).__name__}"
                )
            self._check_args(optim_args, "optim_args")
        self.pt_optim_args = optim_args
        if clip_args is None or callable(clip_args):
            self.clip_args = clip_args
        else:
            self.clip_args = _checked_clip_args(dict(clip_args), "clip_args")
        self._clip_of: dict[torch.Tensor, dict[str, float]] = {}
        self._optimizers: dict[Any, torch.optim.Optimizer] = {}
        self._owner: dict[torch.Tensor, tuple[str | None, torch.optim.Optimizer]] = {}
        self._by_name: dict[str, torch.Tensor] = {}
        self._pending: dict[str, dict] = {}

    def _check_args(self, args: dict, where: str) -> None:
        if self._allowed is None:
            return
        unknown = set(args) - self._allowed
        if unknown:
            raise ValueError(
                f"{where}: unknown key(s) {sorted(unknown)} for "
                f"{getattr(self.pt_optim_constructor, '__name__', self.pt_optim_constructor)}; "
                f"allowed: {sorted(self._allowed)}"
            )

    def _args_for(self, name: str | None) -> dict:
        if not callable(self.pt_optim_args):
            return self.pt_optim_args
        args = _call_per_param(self.pt_optim_args, name)
        if not isinstance(args, dict):
            raise TypeError(f"optim_args callable must return a dict for '{name}', got {args!r}")
        self._check_args(args, f"optim_args('{name}')")
        return args

    def _register(self, p: torch.Tensor) -> torch.optim.Optimizer:
        name = get_param_store().param_name(p)
        args = self._args_for(name)
        clip = self.clip_args
        if callable(clip):
            clip = _checked_clip_args(_call_per_param(clip, name), f"clip_args('{name}')")
        # The checks above come first: a call that raises leaves nothing registered.
        old = self._by_name.get(name) if name is not None else None
        if old is not None:
            _, old_opt = self._owner.pop(old)
            self._clip_of.pop(old, None)
            old_opt.param_groups[0]["params"] = [
                q for q in old_opt.param_groups[0]["params"] if q is not old
            ]
            old_opt.state.pop(old, None)
        key = self._group_key(name, args)
        opt = self._optimizers.get(key)
        if opt is None:
            opt = self.pt_optim_constructor([p], **args)
            self._optimizers[key] = opt
        else:
            opt.param_groups[0]["params"].append(p)
        if clip:
            self._clip_of[p] = clip
        self._owner[p] = (name, opt)
        if name is not None:
            self._by_name[name] = p
            pending = self._pending.pop(name, None)
            if pending is not None:
                self._load_param_state(p, opt, pending)
        return opt

    def _group_key(self, name: str | None, args: dict) -> Any:
        """Parameters with equal keys share one torch optimizer."""
        return _freeze(args)

    @staticmethod
    def _load_param_state(p: torch.Tensor, opt: torch.optim.Optimizer, state: dict) -> None:
        saved = state["state"].get(0)
        if saved is not None:
            opt.state[p] = {k: _copy(v) for k, v in saved.items()}
        for k, v in state["param_groups"][0].items():
            if k != "params":
                opt.param_groups[0][k] = v

    def __call__(self, params: Iterable[torch.Tensor], *args: Any, **kwargs: Any) -> None:
        """Update every tensor in ``params`` from its ``.grad`` (those without one are skipped)."""
        owner = self._owner
        stepped = []
        active: list[torch.optim.Optimizer] = []
        skipped = []
        for p in params:
            entry = owner.get(p)
            opt = entry[1] if entry is not None else self._register(p)
            if p.grad is not None:
                stepped.append(p)
                if opt not in active:
                    active.append(opt)
            else:
                skipped.append((opt, p))
        for opt, p in skipped:
            # An optimizer whose state moves at every step, gradient or not (ClippedAdam's
            # rate decay), hears of the parameters read without one, as in Pyro.
            note = getattr(opt, "note_skipped", None)
            if note is not None:
                note([p])
        if self._clip_of:
            for p in stepped:
                clip = self._clip_of.get(p)
                if clip is None:
                    continue
                if "clip_norm" in clip:
                    clip_grad_norm_(p, clip["clip_norm"])
                if "clip_value" in clip:
                    clip_grad_value_(p, clip["clip_value"])
        for opt in active:
            if not args and not kwargs and adam_step(opt):
                continue
            group = opt.param_groups[0]
            if (
                type(opt) in _FOREACH_SAME
                and group.get("foreach") is None
                and len(group["params"]) >= FOREACH_MIN_PARAMS
            ):
                # One multi-tensor update instead of a Python loop over the parameters: the
                # same numbers, far less overhead with many parameters. Set for this step only,
                # so that the optimizer's settings and state read as the user gave them.
                group["foreach"] = True
                try:
                    opt.step(*args, **kwargs)
                finally:
                    group["foreach"] = None
            else:
                opt.step(*args, **kwargs)

    def _forget(self, p: torch.Tensor) -> None:
        """Drop ``p`` (a parameter removed from the store) and its state, if registered."""
        entry = self._owner.pop(p, None)
        if entry is None:
            return
        name, opt = entry
        self._clip_of.pop(p, None)
        opt.param_groups[0]["params"] = [q for q in opt.param_groups[0]["params"] if q is not p]
        opt.state.pop(p, None)
        if name is not None and self._by_name.get(name) is p:
            del self._by_name[name]

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The underlying torch optimizers (one per distinct set of hyperparameters)."""
        return list(self._optimizers.values())

    # ---- state ---------------------------------------------------------------------------
    def get_state(self) -> dict[str, dict]:
        """``{param_name: torch-format state dict}``, one per parameter, as in Pyro."""
        state = dict(self._pending)
        for p, (name, opt) in self._owner.items():
            if name is None:
                continue
            group = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
            group["params"] = [0]
            per = opt.state.get(p)
            state[name] = {
                "state": {} if not per else {0: {k: _copy(v) for k, v in per.items()}},
                "param_groups": [copy.deepcopy(group)],
            }
        return state

    def set_state(self, state: dict[str, dict]) -> None:
        """Load per-name state; parameters not seen yet get theirs when they first appear."""
        store = get_param_store()
        for name, per in state.items():
            p = self._by_name.get(name)
            # A leaf the store no longer holds (it was reloaded or cleared) is stale: keep the
            # state for the leaf that will replace it.
            live = p is not None and name in store and store.unconstrained(name) is p
            if live and p in self._owner:
                self._load_param_state(p, self._owner[p][1], per)
            else:
                self._pending[name] = per

    def save(self, filename: str | os.PathLike) -> None:
        """Write :meth:`get_state` to ``filename`` atomically."""
        atomic_save(self.get_state(), filename)

    def load(self, filename: str | os.PathLike, map_location: Any = None) -> None:
        """Load state saved by :meth:`save`."""
        self.set_state(torch.load(filename, map_location=map_location, weights_only=False))


def _copy(v: Any) -> Any:
    return v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
