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
import numbers
import os
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.nn.utils import clip_grad_norm_, clip_grad_value_

from ..atomic import atomic_save, safe_load
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
    """A hashable key for ``args``; values of different types (``1`` and ``1.0``) differ."""
    try:
        key = tuple(sorted(((k, type(v), v) for k, v in args.items()), key=lambda kv: kv[0]))
        hash(key)
        return key
    except TypeError:
        return repr(sorted(args.items()))


def _groupable(constructor: Callable) -> bool:
    """Whether parameters may share one instance of ``constructor``: torch's optimizers and
    miniprob's keep everything that differs per parameter in per-parameter state. Others (a
    Pyro ``ClippedAdam`` decays its group's rate in ``step``) get one instance per parameter."""
    module = getattr(constructor, "__module__", None) or ""
    return module.startswith(("torch.optim.", "miniprob.optim.")) and constructor not in (
        torch.optim.LBFGS,  # keeps its state under the first parameter of the group
    )


def _hyperparameters(opt: torch.optim.Optimizer, skip: tuple[str, ...]) -> dict:
    """The group's values of the optimizer's own hyperparameters (not keys a scheduler adds,
    such as ``initial_lr``), less ``skip``."""
    group = opt.param_groups[0]
    return {k: group.get(k) for k in opt.defaults if k not in skip}


def _call_per_param(fn: Callable[..., Any], name: str | None) -> Any:
    """Call a per-parameter callable as Pyro does: with one parameter it gets the name as
    ``nn.Module.named_parameters`` writes it (``'encoder.fc.weight'``), with more it gets
    ``(module_name, param_name)`` (``('encoder', 'fc.weight')``; ``('w', 'w')`` outside a
    module)."""
    full = name or ""
    try:
        arity = len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        arity = 1
    if arity == 1:
        return fn(full.replace("$$$", "."))
    module, sep, param = full.partition("$$$")
    return fn(module, param if sep else full)


def _checked_clip_args(clip_args: Any, where: str) -> dict[str, float]:
    """``clip_args`` without its None entries (no clipping of that kind, as in Pyro)."""
    if not isinstance(clip_args, dict):
        raise TypeError(f"{where} must be a dict, got {clip_args!r}")
    unknown = set(clip_args) - {"clip_norm", "clip_value"}
    if unknown:
        raise ValueError(
            f"{where}: unknown keys {sorted(unknown)}; expected clip_norm and/or clip_value"
        )
    clip_args = {k: v for k, v in clip_args.items() if v is not None}
    for key, value in clip_args.items():
        if isinstance(value, bool) or not (isinstance(value, numbers.Real) and value > 0):
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
        self._restored: dict[str, dict] = {}  # pending state loaded during the current call

    # A handler ``SVI`` runs each step's loss under: ``DistributedOptimizer``'s broadcasts each
    # parameter on its first read. None: the optimizer needs none (nothing added to the step).
    _param_sync: Any = None

    def _step_failed(self, error: BaseException) -> None:
        """Called by ``SVI`` after a step raised ``error`` and was undone (a
        ``DistributedOptimizer`` tells the other ranks); nothing to do here."""

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
        pending = self._pending.get(name) if name is not None else None
        if pending is not None:  # loaded before the parameter existed: its shape is known now
            check_optim_state({name: pending}, {name: tuple(p.shape)}, "loaded optimizer state")
        key = self._group_key(name, args, restarted=old is not None and pending is None)
        opt = self._optimizers.get(key)
        if opt is None or not _groupable(self.pt_optim_constructor):
            opt = self._construct(name, p, args)
            self._add_optimizer(key, opt)
        else:
            opt.param_groups[0]["params"].append(p)
        if old is not None:
            self._leave_group(old)
        if clip:
            self._clip_of[p] = clip
        self._owner[p] = (name, opt)
        if name is not None:
            self._by_name[name] = p
            if pending is not None:
                # Kept until the step succeeds: a step that fails and removes ``p`` again
                # leaves the state waiting for the next one.
                self._restored[name] = self._pending.pop(name)
                self._load_param_state(p, pending, args)
        return self._owner[p][1]

    def _construct(self, name: str | None, p: torch.Tensor, args: dict) -> torch.optim.Optimizer:
        try:
            return self.pt_optim_constructor([p], **args)
        except (TypeError, ValueError) as e:
            raise type(e)(f"optimizer for param '{name}': {e}") from e

    def _add_optimizer(self, key: Any, opt: torch.optim.Optimizer) -> None:
        """Keep a new torch optimizer under ``key`` (schedulers attach theirs here)."""
        self._optimizers[key] = opt

    def _leave_group(self, p: torch.Tensor) -> None:
        """Take ``p`` out of its optimizer, with its state and clipping."""
        _, opt = self._owner.pop(p)
        self._clip_of.pop(p, None)
        _drop(opt, p)

    def _group_key(self, name: str | None, args: dict, restarted: bool = False) -> Any:
        """Parameters with equal keys share one torch optimizer. ``restarted``: ``name`` had
        a leaf before and starts over with a new one (no saved state waits for it)."""
        if not _groupable(self.pt_optim_constructor):
            return ("own", name)  # one optimizer per parameter, as in Pyro
        return _freeze(args)

    # Hyperparameters a schedule changes over time: not compared when state is loaded.
    _scheduled_keys: tuple[str, ...] = ()

    def _load_param_state(self, p: torch.Tensor, state: dict, args: dict | None = None) -> None:
        """Give ``p`` its saved state and hyperparameters, through torch's ``load_state_dict``
        (which casts tensors to ``p``'s dtype and device and upgrades older formats). Saved
        hyperparameters other than its group's give ``p`` an optimizer of its own, as in Pyro,
        instead of changing those of the parameters it shares one with."""
        self._install_param_state(p, self._loaded_param_state(p, state, args))

    def _loaded_param_state(
        self, p: torch.Tensor, state: dict, args: dict | None = None
    ) -> torch.optim.Optimizer:
        """A new torch optimizer for ``p`` holding ``state`` (nothing else changes, so a state
        torch refuses leaves everything as it was)."""
        name = self._owner[p][0]
        # ``args``: the optimizer arguments already resolved for ``p`` (a callable is not
        # asked twice).
        loaded = self._construct(name, p, self._args_for(name) if args is None else args)
        # Keys the saved group lacks keep the optimizer's values for them.
        defaults = {k: v for k, v in loaded.param_groups[0].items() if k != "params"}
        group = {**defaults, **state["param_groups"][0]}
        # Copies: torch keeps the tensors it is given (a step count is updated in place).
        per = {i: {k: _copy(v) for k, v in st.items()} for i, st in state["state"].items()}
        loaded.load_state_dict({"state": per, "param_groups": [group]})
        return loaded

    def _install_param_state(self, p: torch.Tensor, loaded: torch.optim.Optimizer) -> None:
        """Make the state of ``loaded`` (from :meth:`_loaded_param_state`) ``p``'s."""
        name, opt = self._owner[p]
        if _hyperparameters(loaded, self._scheduled_keys) == _hyperparameters(
            opt, self._scheduled_keys
        ):
            # Scheduled values are the group's schedule's: shared by the whole group, they were
            # equal for all of it when saved (a scheduler's own state restores the rate, not a
            # cycled momentum).
            group = opt.param_groups[0]
            for key in self._scheduled_keys:
                if key in group:
                    group[key] = loaded.param_groups[0][key]
            if p in loaded.state:
                opt.state[p] = loaded.state[p]
            else:
                opt.state.pop(p, None)
            return
        _drop(opt, p)
        self._add_optimizer(("own", name), loaded)
        self._owner[p] = (name, loaded)

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
        self._restored.clear()

    def _forget(self, p: torch.Tensor) -> None:
        """Drop ``p`` (a parameter removed from the store after a failed step) and its state;
        state restored for it in that step waits again for its next leaf."""
        entry = self._owner.get(p)
        if entry is None:
            return
        name = entry[0]
        self._leave_group(p)
        if name is not None and self._by_name.get(name) is p:
            del self._by_name[name]
            restored = self._restored.pop(name, None)
            if restored is not None:
                self._pending[name] = restored

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The underlying torch optimizers (one per distinct set of hyperparameters)."""
        return list(self._optimizers.values())

    # ---- state ---------------------------------------------------------------------------
    def get_state(self) -> dict[str, dict]:
        """``{param_name: torch-format state dict}``, one per parameter, as in Pyro."""
        state = dict(self._pending)
        for p, (name, opt) in self._owner.items():
            if name is None or name in self._pending:  # pending: newer than a stale leaf's
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
        """Load per-name state; parameters not seen yet get theirs when they first appear.

        Every entry is checked first (its format, and its tensors' shapes against the
        parameters the store holds), so a bad one raises ``ValueError`` naming the parameter
        and changes nothing.
        """
        store = get_param_store()
        shapes = {name: tuple(store.unconstrained(name).shape) for name in state if name in store}
        check_optim_state(state, shapes)
        loaded = {}
        for name, per in state.items():
            p = self._by_name.get(name)
            # A leaf the store no longer holds (it was reloaded or cleared) is stale: keep the
            # state for the leaf that will replace it.
            live = p is not None and name in store and store.unconstrained(name) is p
            if live and p in self._owner:
                try:  # every live parameter's state is loaded before any is installed
                    loaded[name] = (p, self._loaded_param_state(p, per))
                except (TypeError, ValueError, KeyError, RuntimeError) as e:
                    raise ValueError(f"optimizer state: param '{name}': {e}") from e
        for name, per in state.items():
            if name in loaded:
                self._install_param_state(*loaded[name])
            else:
                self._pending[name] = per

    def save(self, filename: str | os.PathLike) -> None:
        """Write :meth:`get_state` to ``filename`` atomically."""
        atomic_save(self.get_state(), filename)

    def load(
        self, filename: str | os.PathLike, map_location: Any = None, trusted: bool = False
    ) -> None:
        """Load state saved by :meth:`save`.

        The file is read as weights only (tensors, numbers, containers): a file holding any
        other object raises ``ValueError`` and runs nothing. ``trusted=True`` unpickles
        anything, running whatever code the file names: only for a file you wrote.
        """
        what = f"optimizer state file {os.fspath(filename)!r}"
        self.set_state(safe_load(filename, what, map_location, trusted=trusted))


# Adafactor keeps factored second moments, which broadcast to the parameter's shape.
_FACTORED = ("row_var", "col_var")


def check_optim_state(
    state: Any, shapes: dict[str, tuple[int, ...]], where: str = "optimizer state"
) -> None:
    """Raise ``ValueError`` naming the parameter if ``state`` (from ``PyroOptim.get_state``)
    is not ``{name: torch optimizer state dict for one parameter}``, or if a tensor of it
    (a moment, a momentum buffer) does not have that parameter's shape in ``shapes``.

    Example::

        >>> import torch
        >>> good = {"w": {"state": {0: {"exp_avg": torch.zeros(2)}}, "param_groups": [{}]}}
        >>> check_optim_state(good, {"w": (2,)})
        >>> try:
        ...     check_optim_state(good, {"w": (3,)})
        ... except ValueError as e:
        ...     print(str(e)[:60])
        optimizer state: param 'w': 'exp_avg' has shape (2,), expect
    """
    if not isinstance(state, dict):
        raise ValueError(f"{where}: expected a dict by parameter name, got {type(state).__name__}")
    for name, per in state.items():
        prefix = f"{where}: param '{name}'"
        if (
            not isinstance(per, dict)
            or not isinstance(per.get("state"), dict)
            or not isinstance(per.get("param_groups"), list)
            or len(per["param_groups"]) != 1
            or not isinstance(per["param_groups"][0], dict)
        ):
            raise ValueError(
                f"{prefix}: expected a torch optimizer state dict with 'state' and one param "
                f"group, got {per!r:.200}"
            )
        entries = per["state"]
        if set(entries) - {0} or not all(isinstance(v, dict) for v in entries.values()):
            raise ValueError(
                f"{prefix}: expected its per-parameter state under key 0, got the keys "
                f"{sorted(map(repr, entries))}"
            )
        shape = shapes.get(name)
        if shape is None:
            continue
        for key, value in entries.get(0, {}).items():
            if not isinstance(value, torch.Tensor) or value.dim() == 0:
                continue  # a step count, a scalar
            found = tuple(value.shape)
            if key in _FACTORED:
                try:
                    fits = torch.broadcast_shapes(value.shape, shape) == shape
                except RuntimeError:
                    fits = False
            else:
                fits = found == shape
            if not fits:
                raise ValueError(
                    f"{prefix}: '{key}' has shape {found}, expected the parameter's shape {shape}"
                )


def _drop(opt: torch.optim.Optimizer, p: torch.Tensor) -> None:
    opt.param_groups[0]["params"] = [q for q in opt.param_groups[0]["params"] if q is not p]
    opt.state.pop(p, None)


def _copy(v: Any) -> Any:
    return v.detach().clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)
