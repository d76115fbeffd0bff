"""The ParamStore: each parameter's unconstrained leaf tensor and its constraint.

Optimizers update the unconstrained leaves; reading a parameter gives the constrained value,
computed afresh from the leaf, with ``.unconstrained()`` returning the leaf (as in Pyro).

The current store is per thread and task: ``get_param_store()`` returns the global store unless
a ``with store.scope():`` block has made a fresh one current.

Example::

    >>> import torch, miniprob as pyro
    >>> from miniprob.distributions import constraints
    >>> with pyro.get_param_store().scope() as store:
    ...     s = pyro.param("s", torch.tensor(2.0), constraint=constraints.positive)
    ...     round(store.unconstrained("s").item(), 4), s.unconstrained() is store.unconstrained("s")
    (0.6931, True)
"""

from __future__ import annotations

import os
import re
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch.distributions import constraints
from torch.distributions.transforms import identity_transform

from .atomic import atomic_save, safe_load
from .unconstrain import constraint_transform, unconstrain

MODULE_SEPARATOR = "$$$"


def _transform_for(name: str, constraint: constraints.Constraint):
    if not isinstance(constraint, constraints.Constraint):
        raise ValueError(
            f"param '{name}': constraint must be a torch.distributions.constraints.Constraint, "
            f"got {constraint!r}"
        )
    return constraint_transform(f"param '{name}'", constraint)


class _LeafHandle(weakref.ref):
    """The ``.unconstrained`` handle of a leaf that is its own value (a real parameter).

    It lives in the leaf's ``__dict__``, which pickling and ``copy.deepcopy`` of a module copy
    with the leaf: a plain weakref cannot be pickled, so this one is copied as a dead handle
    (the copy is no store's leaf until a ``param`` statement registers it, which gives it a live
    one).
    """

    __slots__ = ()

    def __reduce__(self) -> tuple:
        return _dead_handle, ()


class _Gone:
    pass


def _dead_handle() -> _LeafHandle:
    return _LeafHandle(_Gone())


def _state_leaf(name: str, value: Any, transform: Any) -> torch.Tensor:
    """A fresh unconstrained leaf for ``value``, an entry of a state, checked against
    ``transform`` (its constraint's), so that registering it cannot fail halfway."""
    try:
        leaf = torch.as_tensor(value).detach().clone()
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"param '{name}': the state's value is not a tensor: {value!r}") from e
    if not leaf.is_floating_point() and not leaf.is_complex():
        leaf = leaf.to(torch.get_default_dtype())
    with torch.no_grad():
        try:
            transform(leaf)
        except Exception as e:
            raise ValueError(
                f"param '{name}': the state's value of shape {tuple(leaf.shape)} does not fit "
                f"its constraint's transform {transform}: {e}"
            ) from e
    return leaf


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and bool(torch.equal(a, b))
        )
    return type(a) is type(b) and a == b


def canonical_constraint(constraint: constraints.Constraint) -> constraints.Constraint:
    """torch's own instance (``constraints.positive``, ...) for an unpickled copy of one, so
    that ``is`` comparisons keep working after a load (bounds may be tensors).

    Example::

        >>> import copy
        >>> canonical_constraint(copy.deepcopy(constraints.positive)) is constraints.positive
        True
    """
    attrs = vars(constraint)
    for candidate in vars(constraints).values():
        if type(candidate) is not type(constraint):
            continue
        theirs = vars(candidate)
        if theirs.keys() == attrs.keys() and all(_same(theirs[k], attrs[k]) for k in attrs):
            return candidate
    return constraint


class ParamStore:
    """A dict-like store of named parameters: unconstrained leaves plus constraints.

    Example::

        >>> import torch
        >>> store = ParamStore()
        >>> store.setdefault("w", torch.zeros(2)).shape
        torch.Size([2])
        >>> list(store.keys())
        ['w']
    """

    def __init__(self) -> None:
        self._params: dict[str, torch.Tensor] = {}
        self._constraints: dict[str, constraints.Constraint] = {}
        self._transforms: dict[str, Any] = {}
        self._param_to_name: dict[torch.Tensor, str] = {}

    # ---- reading -----------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        """The constrained value, computed from the leaf; ``.unconstrained()`` gives the leaf."""
        try:
            u = self._params[name]
        except KeyError:
            raise KeyError(
                f"param '{name}' is not in the param store and no init value was given"
            ) from None
        t = self._transforms[name]
        if t is identity_transform:  # a real parameter: its leaf, without a call
            return u
        value = t(u)
        if value is not u:
            value.unconstrained = weakref.ref(u)
        return value

    def get_param(
        self,
        name: str,
        init: torch.Tensor | Callable[[], torch.Tensor] | None = None,
        constraint: constraints.Constraint = constraints.real,
        event_dim: int | None = None,
    ) -> torch.Tensor:
        """Read ``name``, creating it from ``init`` (a tensor or a thunk) the first time."""
        if name not in self._params:
            if init is None:
                raise KeyError(
                    f"param '{name}' is not in the param store and no init value was given"
                )
            self._create(name, init, constraint)
        return self[name]

    setdefault = get_param

    def unconstrained(self, name: str) -> torch.Tensor:
        """The unconstrained leaf tensor of ``name`` (what optimizers update)."""
        return self._params[name]

    def get_constraint(self, name: str) -> constraints.Constraint:
        return self._constraints[name]

    def param_name(self, tensor: torch.Tensor) -> str | None:
        """The name of an unconstrained leaf, or None."""
        return self._param_to_name.get(tensor)

    # ---- writing -----------------------------------------------------------------------
    def _create(self, name: str, init: Any, constraint: constraints.Constraint) -> None:
        transform = _transform_for(name, constraint)
        if callable(init) and not isinstance(init, torch.Tensor):
            init = init()
        u = unconstrain(f"param '{name}'", init, constraint, transform)
        self._register(name, u, constraint, transform)

    def _register(self, name: str, leaf: torch.Tensor, constraint: Any, transform: Any) -> None:
        leaf.requires_grad_(True)
        if name not in self._params:
            created = _CREATED.get()
            if created is not None:
                created.append((self, name, leaf))
        self._params[name] = leaf
        self._constraints[name] = constraint
        self._transforms[name] = transform
        self._param_to_name[leaf] = name
        with torch.no_grad():
            if transform(leaf) is leaf:
                # Reading returns the leaf itself: give it the same ``.unconstrained()`` handle.
                leaf.unconstrained = _LeafHandle(leaf)

    def __setitem__(self, name: str, value: torch.Tensor) -> None:
        """Set ``name`` to a constrained value, keeping its constraint (real if new)."""
        constraint = self._constraints.get(name, constraints.real)
        old = self._params.pop(name, None)
        if old is not None:
            self._param_to_name.pop(old, None)
        try:
            self._create(name, value, constraint)
        except Exception:
            if old is not None:
                self._params[name] = old
                self._param_to_name[old] = name
            raise

    def replace_param(
        self, param_name: str, new_param: torch.Tensor, old_param: torch.Tensor
    ) -> None:
        """Set ``param_name``, whose current value is ``old_param``, to ``new_param`` (Pyro's
        deprecated spelling of ``store[param_name] = new_param``, with a check).

        ``old_param`` must be the value read from the store (its ``.unconstrained()`` is the
        stored leaf); otherwise an ``AssertionError``, as in Pyro, and the store is unchanged.

        Example::

            >>> import torch, warnings
            >>> store = ParamStore()
            >>> old = store.setdefault("w", torch.zeros(2))
            >>> with warnings.catch_warnings():  # the deprecation warning
            ...     warnings.simplefilter("ignore")
            ...     store.replace_param("w", torch.ones(2), old)
            >>> store["w"].tolist()
            [1.0, 1.0]
        """
        warnings.warn(
            "ParamStore.replace_param() is deprecated; use store[name] = value instead",
            DeprecationWarning,
            stacklevel=2,
        )
        current = self._params.get(param_name)
        if current is None:
            raise KeyError(f"param '{param_name}' is not in the param store")
        handle = getattr(old_param, "unconstrained", None)
        if not callable(handle) or handle() is not current:
            raise AssertionError(
                f"param '{param_name}': old_param is not its current value (give the tensor "
                f"read from the store, e.g. store['{param_name}'])"
            )
        self[param_name] = new_param

    def __delitem__(self, name: str) -> None:
        u = self._params.pop(name)
        self._param_to_name.pop(u, None)
        del self._constraints[name]
        del self._transforms[name]

    def clear(self) -> None:
        """Remove every parameter."""
        self._params.clear()
        self._constraints.clear()
        self._transforms.clear()
        self._param_to_name.clear()

    # ---- dict interface ----------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self._params

    def __len__(self) -> int:
        return len(self._params)

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def keys(self):
        return self._params.keys()

    def values(self) -> Iterator[torch.Tensor]:
        return (self[name] for name in self._params)

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        return ((name, self[name]) for name in self._params)

    def match(self, name: str) -> dict[str, torch.Tensor]:
        """The params whose names match the regular expression ``name`` (``re.match``, from the
        start of the name), as ``{name: constrained value}``.

        Example::

            >>> import torch
            >>> store = ParamStore()
            >>> for key in ("enc.w", "dec.w"):
            ...     _ = store.setdefault(key, torch.zeros(1))
            >>> list(store.match("enc"))
            ['enc.w']
        """
        pattern = re.compile(name)
        return {key: self[key] for key in self._params if pattern.match(key)}

    def get_all_param_names(self) -> list[str]:
        return list(self._params)

    def named_parameters(self) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, unconstrained leaf)`` pairs, ready for ``torch.optim``."""
        return iter(self._params.items())

    # ---- state, files ------------------------------------------------------------------
    def get_state(self) -> dict:
        """A snapshot: ``{"params": {name: unconstrained}, "constraints": {name: constraint}}``."""
        return {
            "params": {k: v.detach().clone() for k, v in self._params.items()},
            "constraints": dict(self._constraints),
        }

    def set_state(self, state: dict) -> None:
        """Merge a snapshot from :meth:`get_state` into the store, as Pyro does: its parameters
        replace those of the same name, and parameters it does not name are kept.

        Every entry is checked and converted before anything changes, so a bad one raises a
        ``ValueError`` naming the parameter and leaves the store as it was. A number or an
        integer tensor takes the default float dtype, as an init value does.

        Example::

            >>> import torch
            >>> store = ParamStore()
            >>> _ = store.setdefault("kept", torch.tensor(1.0))
            >>> state = {"params": {"w": torch.zeros(2)}, "constraints": {"w": constraints.real}}
            >>> store.set_state(state)
            >>> list(store.keys())
            ['kept', 'w']
        """
        if not isinstance(state, dict) or "params" not in state or "constraints" not in state:
            found = f"the keys {list(state)}" if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"a ParamStore state is a dict with 'params' and 'constraints', got {found}"
            )
        params, cons = state["params"], state["constraints"]
        entries = []
        for name, value in params.items():
            if name not in cons:
                raise ValueError(f"param '{name}': the state gives no constraint for it")
            transform = _transform_for(name, cons[name])
            entries.append((name, _state_leaf(name, value, transform), cons[name], transform))
        for name, leaf, constraint, transform in entries:
            old = self._params.get(name)
            if old is not None:
                self._param_to_name.pop(old, None)
            self._register(name, leaf, constraint, transform)

    def save(self, path: str | os.PathLike) -> None:
        """Write the state to ``path`` atomically (a crash mid-save leaves the old file intact)."""
        atomic_save(self.get_state(), path)

    def load(
        self, path: str | os.PathLike, map_location: Any = None, trusted: bool = False
    ) -> None:
        """Merge the state saved at ``path`` into the store (see :meth:`set_state`).

        The file is read as weights only: tensors and torch constraints load, and a file
        holding any other object raises ``ValueError`` and runs nothing (see
        :mod:`miniprob.atomic`). ``trusted=True`` unpickles anything, running whatever code the
        file names: pass it only for a file you wrote (one with a custom constraint class).
        """
        state = safe_load(
            path, f"param store file {os.fspath(path)!r}", map_location, trusted=trusted
        )
        if not isinstance(state, dict) or "params" not in state or "constraints" not in state:
            raise ValueError(f"{os.fspath(path)!r} does not hold a miniprob ParamStore state")
        if isinstance(state["constraints"], dict):
            state["constraints"] = {
                k: canonical_constraint(c) if isinstance(c, constraints.Constraint) else c
                for k, c in state["constraints"].items()
            }
        self.set_state(state)

    @contextmanager
    def scope(self) -> Iterator[ParamStore]:
        """Make a fresh, empty store current inside the ``with`` block (this thread/task only)."""
        store = ParamStore()
        token = _CURRENT.set(store)
        try:
            yield store
        finally:
            _CURRENT.reset(token)


_GLOBAL = ParamStore()
_CURRENT: ContextVar[ParamStore] = ContextVar("miniprob_param_store", default=_GLOBAL)
# While set (by ``SVI.step``), a list of the ``(store, name, leaf)`` each ``param`` statement of
# this thread or task creates: what a failed step removes again, and nothing another thread
# added to a shared store meanwhile.
_CREATED: ContextVar[list[tuple[ParamStore, str, torch.Tensor]] | None] = ContextVar(
    "miniprob_params_created", default=None
)


def get_param_store() -> ParamStore:
    """The current ParamStore (the global one unless inside ``ParamStore.scope()``)."""
    return _CURRENT.get()


def clear_param_store() -> None:
    """Remove every parameter from the current store."""
    _CURRENT.get().clear()


def module_param_name(module_name: str, param_name: str) -> str:
    """Pyro's name for a module's parameter: ``'encoder$$$fc.weight'``."""
    return module_name + MODULE_SEPARATOR + param_name
