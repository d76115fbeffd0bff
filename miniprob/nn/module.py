"""``PyroModule``: an ``nn.Module`` whose attributes are ``param`` and ``sample`` statements.

An attribute set to :class:`PyroParam` is a constrained parameter: the module keeps its
unconstrained leaf as the ``nn.Parameter`` ``<name>_unconstrained`` (built by
:mod:`miniprob.unconstrain`, the mechanism the ParamStore and ``Constrained`` use), and reading
the attribute inside the module's ``__call__`` (or a :func:`pyro_method`) puts that very leaf in
the current ParamStore under the attribute's path (``"linear.weight"``) and returns the value of
a ``param`` statement. Plain ``nn.Parameter`` attributes become store params the same way, and
plain ``nn.Module`` attributes ``module`` statements. An attribute set to :class:`PyroSample` is a
``sample`` statement named by its path, drawn at the first read inside a call and cached until
the outermost call returns. Module and store agree at each read: a leaf found in the store is
adopted by the module, one missing (after ``clear_param_store()``) is put back with the module's
current value. As in Pyro, reads outside a call make no statements (no path is known).

Example::

    >>> import torch, miniprob as pyro
    >>> from miniprob.distributions import Normal, constraints
    >>> pyro.clear_param_store()
    >>> class Model(PyroModule):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.scale = PyroParam(torch.tensor(2.0), constraints.positive)
    ...         self.loc = PyroSample(Normal(0.0, 1.0))
    ...     def forward(self):
    ...         return self.loc * self.scale
    >>> model = Model()
    >>> with pyro.poutine.trace() as tr:
    ...     _ = model()
    >>> list(tr.trace.nodes), pyro.param("scale").item()
    (['loc', 'scale'], 2.0)
"""

from __future__ import annotations

import copyreg
import functools
import inspect
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
from torch.distributions import Distribution, constraints

from .. import settings
from ..params import (
    _CURRENT,
    MODULE_SEPARATOR,
    ParamStore,
    _LeafHandle,
    _transform_for,
    module_param_name,
)
from ..primitives import deterministic, module, param, sample
from ..runtime import _STACK, apply_stack, new_message
from ..unconstrain import constraint_transform, unconstrain

__all__ = [
    "PyroModule",
    "PyroModuleList",
    "PyroParam",
    "PyroSample",
    "clear",
    "pyro_method",
    "to_pyro_module_",
]


class PyroParam(NamedTuple):
    """A learnable attribute of a :class:`PyroModule`, like :func:`miniprob.param`.

    ``init_value`` is a tensor or a zero-argument callable (called once, when the attribute is
    set). It must be finite with a finite unconstrained value (Pyro's rule: an init outside the
    support whose inverse transform is finite is accepted). Also a decorator of a method
    computing the init lazily, as in Pyro: ``@PyroParam`` or ``@PyroParam(constraint=...)``.

    :param init_value: a tensor, a callable returning one, or None when used as a decorator.
    :param constraint: the constraint the value satisfies (``constraints.real`` by default).
    :param event_dim: the number of rightmost dims that are not batch dims (for subsampling).

    Example::

        >>> import torch
        >>> from miniprob.distributions import constraints
        >>> m = PyroModule()
        >>> m.p = PyroParam(torch.tensor([0.5, 0.5]), constraints.simplex, event_dim=1)
        >>> m.p.tolist(), [name for name, _ in m.named_parameters()]
        ([0.5, 0.5], ['p_unconstrained'])
    """

    init_value: torch.Tensor | Callable[[], torch.Tensor] | None = None
    constraint: constraints.Constraint = constraints.real
    event_dim: int | None = None

    def __get__(self, obj: PyroModule | None, obj_type: type) -> Any:
        # As a decorator: the first read on an instance creates the attribute from the method.
        if obj is None:
            return self
        name = self.init_value.__name__
        if name not in obj.__dict__["_pyro_params"]:
            init = functools.partial(self.init_value, obj)
            setattr(obj, name, PyroParam(init, self.constraint, self.event_dim))
        return obj.__getattr__(name)

    def __call__(self, init_value: Callable[[Any], torch.Tensor]) -> PyroParam:
        """``@PyroParam(constraint=..., event_dim=...)`` decorating a method."""
        if self.init_value is not None:
            raise TypeError(
                "PyroParam: only a PyroParam without an init value decorates a method, "
                f"this one has {self.init_value!r}"
            )
        return PyroParam(init_value, self.constraint, self.event_dim)


class PyroSample:
    """A random attribute of a :class:`PyroModule`, like :func:`miniprob.sample`.

    ``prior`` is a distribution, or a function of the module (``lambda self: ...``) returning a
    distribution or, for a deterministic attribute, a tensor (recorded with ``deterministic``).
    Also a decorator of such a method, as in Pyro.

    Example::

        >>> import torch
        >>> from miniprob.distributions import Normal
        >>> m = PyroModule()
        >>> m.x = PyroSample(Normal(0.0, 1.0))
        >>> m.y = PyroSample(lambda self: Normal(self.x, 1.0))
        >>> m.x.shape                       # outside a call: a draw, no sample statement
        torch.Size([])
    """

    __slots__ = ("name", "prior")

    def __init__(self, prior: Distribution | Callable[[Any], Any]) -> None:
        self.prior = prior
        self.name: str | None = None

    def __repr__(self) -> str:
        return f"PyroSample({self.prior!r})"

    def __set_name__(self, owner: type, name: str) -> None:
        # As a decorator: keep the method reachable by its own name, so that modules holding it
        # pickle (pickle finds functions by qualified name).
        _check_prior(f"{owner.__name__}.{name}", self.prior)
        self.name = name
        if not _is_distribution(self.prior):
            hidden = "_pyro_prior_" + name
            self.prior.__name__ = hidden
            self.prior.__qualname__ = f"{owner.__qualname__}.{hidden}"
            setattr(owner, hidden, self.prior)

    def __get__(self, obj: PyroModule | None, obj_type: type) -> Any:
        if obj is None:
            return self
        obj.__dict__["_pyro_samples"].setdefault(self.name, self.prior)
        return obj.__getattr__(self.name)


_MODULE_LOCAL_PARAMS = False


@settings.register("module_local_params", __name__, "_MODULE_LOCAL_PARAMS")
def _check_module_local_params(value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"settings: module_local_params should be a bool, got {value!r}")


class _Context:
    """The state one root module shares with its sub-modules: how deep in calls it is, the
    values of its ``PyroSample`` attributes drawn during the outermost call and, with
    ``module_local_params``, the store made current during calls (where a stray ``param``
    statement would land)."""

    __slots__ = ("active", "cache", "local_store", "token", "used")

    def __init__(self) -> None:
        self.active = 0
        self.cache: dict[str, torch.Tensor] = {}
        self.used = False
        self.local_store: ParamStore | None = None
        self.token: Any = None

    def __enter__(self) -> None:
        if not self.active and _MODULE_LOCAL_PARAMS:
            if self.local_store is None:
                self.local_store = ParamStore()
            self.token = _CURRENT.set(self.local_store)
        self.active += 1
        self.used = True

    def __exit__(self, *exc: Any) -> None:
        self.active -= 1
        if not self.active:
            self.cache.clear()
            if self.token is not None:
                _CURRENT.reset(self.token)
                self.token = None


def _local_param(
    name: str, value: torch.Tensor, constraint: constraints.Constraint, event_dim: int | None
) -> torch.Tensor:
    """A ``param`` statement whose value is a module's own (``module_local_params``): handlers
    see it, the store is not involved."""
    if not _STACK.get():
        return value
    kwargs = {"constraint": constraint, "event_dim": event_dim}
    msg = new_message("param", name, lambda *args, **kwargs: value, (name,), kwargs)
    apply_stack(msg)
    return msg["value"]


def _with_handle(leaf: torch.Tensor) -> torch.Tensor:
    # A leaf read as its own value carries its ``.unconstrained()`` handle, as store leaves do.
    if "unconstrained" not in leaf.__dict__:
        leaf.unconstrained = _LeafHandle(leaf)
    return leaf


def _make_name(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _is_distribution(prior: Any) -> bool:
    return isinstance(prior, Distribution) or hasattr(prior, "_miniprob_resolve")


def _check_prior(where: str, prior: Any) -> None:
    if _is_distribution(prior):
        return
    if not callable(prior):
        raise TypeError(
            f"PyroSample '{where}': the prior should be a distribution or a function of the "
            f"module returning one, got {type(prior).__name__}: {prior!r}"
        )
    try:
        required = [
            p
            for p in inspect.signature(prior).parameters.values()
            if p.default is inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return  # no signature to inspect (a builtin): trust it
    if len(required) != 1:
        raise TypeError(
            f"PyroSample '{where}': a prior function should take the single argument 'self' "
            f"(the module), {prior!r} takes {len(required)}"
        )


def _draw(prior: Any) -> torch.Tensor:
    if not isinstance(prior, Distribution):
        prior = prior._miniprob_resolve() if hasattr(prior, "_miniprob_resolve") else prior
        if not isinstance(prior, Distribution):
            return prior
    return prior.rsample() if prior.has_rsample else prior.sample()


def _leaf_parameter(owner: str, init: Any, constraint: constraints.Constraint) -> torch.Tensor:
    """A fresh ``nn.Parameter`` holding ``init``'s unconstrained value (Pyro's rule for init)."""
    if callable(init) and not isinstance(init, torch.Tensor):
        init = init()
    if isinstance(init, torch.Tensor):
        init = init.detach()
    transform = constraint_transform(owner, constraint)
    return torch.nn.Parameter(unconstrain(owner, init, constraint, transform))


def _as_module_leaf(store: ParamStore, fullname: str) -> torch.nn.Parameter:
    """The store's leaf for ``fullname`` as an ``nn.Parameter`` (made one in place of the plain
    tensor a ``param`` statement created, data shared), so that it can be a module's too."""
    leaf = store._params[fullname]
    if not isinstance(leaf, torch.nn.Parameter):
        leaf = torch.nn.Parameter(leaf.detach())
        _put_in_store(store, fullname, leaf, store._constraints[fullname])
    return leaf


def _put_in_store(
    store: ParamStore, fullname: str, leaf: torch.Tensor, constraint: constraints.Constraint
) -> None:
    # A leaf frozen with ``requires_grad_(False)`` stays frozen (registering would unfreeze it).
    requires_grad = leaf.requires_grad
    old = store._params.get(fullname)
    if old is not None:
        store._param_to_name.pop(old, None)
    store._register(fullname, leaf, constraint, _transform_for(fullname, constraint))
    leaf.requires_grad_(requires_grad)


class _PyroModuleMeta(type):
    """``PyroModule[nn.Linear]``: the class mixing ``PyroModule`` into ``nn.Linear``, made once."""

    _mixins: dict[type, type] = {}

    def __getitem__(cls, Module: type) -> type:
        if not (isinstance(Module, type) and issubclass(Module, torch.nn.Module)):
            raise TypeError(f"PyroModule[...] takes an nn.Module subclass, got {Module!r}")
        if issubclass(Module, PyroModule):
            return Module
        if Module is torch.nn.Module:
            return PyroModule
        mixin = _PyroModuleMeta._mixins.get(Module)
        if mixin is None:
            bases = [PyroModule[b] for b in Module.__bases__ if issubclass(b, torch.nn.Module)]
            mixin = type(
                "Pyro" + Module.__name__,
                (Module, *bases),
                {
                    "__reduce__": _reduce_mixin,
                    "__module__": Module.__module__,
                    "_pyro_mixed_into": Module,
                },
            )
            _PyroModuleMeta._mixins[Module] = mixin
        return mixin


def _reduce_mixin(self: PyroModule) -> tuple:
    # A mixin class is made at run time, so pickle cannot find it by name: rebuild it from the
    # class it mixes into. A named subclass of a mixin pickles by its name, as usual.
    state = self.__getstate__() if hasattr(self, "__getstate__") else self.__dict__.copy()
    mixed = type(self).__dict__.get("_pyro_mixed_into")
    if mixed is None:
        return copyreg.__newobj__, (type(self),), state
    return _new_mixin_instance, (mixed,), state


def _new_mixin_instance(Module: type) -> PyroModule:
    cls = PyroModule[Module]
    return cls.__new__(cls)


class PyroModule(torch.nn.Module, metaclass=_PyroModuleMeta):
    """An ``nn.Module`` whose :class:`PyroParam`, ``nn.Parameter`` and :class:`PyroSample`
    attributes are ``param`` and ``sample`` statements named by their path in the module tree.

    Reads inside ``__call__`` (or a :func:`pyro_method`) make the statements; sample values are
    cached until the outermost call returns. ``PyroModule[nn.Linear](3, 1)`` is ``nn.Linear``
    with these effects (a mixin class, made once per class). Like Pyro, module and store stay in
    sync at each ``setattr``/``getattr``/``delattr`` of such an attribute.

    :param name: the name of a root module, prefixed to its attributes' paths (ignored in a
        sub-module, whose path is its place in the tree).

    Example::

        >>> import torch, miniprob as pyro
        >>> from miniprob.distributions import Normal
        >>> pyro.clear_param_store()
        >>> linear = PyroModule[torch.nn.Linear](3, 1)
        >>> linear.weight = PyroSample(Normal(0.0, 1.0).expand([1, 3]).to_event(2))
        >>> with pyro.poutine.trace() as tr:
        ...     _ = linear(torch.ones(2, 3))
        >>> [(n, s["type"]) for n, s in tr.trace.nodes.items()]
        [('weight', 'sample'), ('bias', 'param')]
    """

    def __init__(self, name: str = "") -> None:
        self._pyro_name = name
        self._pyro_context = _Context()  # shared with the sub-modules
        self._pyro_params: OrderedDict[str, tuple[constraints.Constraint, int | None]] = (
            OrderedDict()
        )
        self._pyro_samples: OrderedDict[str, Any] = OrderedDict()
        super().__init__()

    def add_module(self, name: str, module: torch.nn.Module | None) -> None:
        """Add a child module; a ``PyroModule`` child joins this module's tree."""
        if isinstance(module, PyroModule):
            module._pyro_set_supermodule(_make_name(self._pyro_name, name), self._pyro_context)
        super().add_module(name, module)

    def named_pyro_params(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, value)`` of the parameters, a :class:`PyroParam` by its constrained value
        under its own name (``named_parameters`` lists its ``<name>_unconstrained`` leaf)."""
        return self._named_members(_pyro_params_of, prefix=prefix, recurse=recurse)

    def _pyro_set_supermodule(self, name: str, context: _Context) -> None:
        self._pyro_name = name
        self._pyro_context = context
        for key, child in self._modules.items():
            if isinstance(child, PyroModule):
                if child._pyro_context.used and child._pyro_context is not context:
                    raise RuntimeError(
                        f"PyroModule '{_make_name(name, key)}' already ran outside its "
                        "supermodule; attach sub-modules before running them"
                    )
                child._pyro_set_supermodule(_make_name(name, key), context)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        context = self._pyro_context
        with context:
            result = super().__call__(*args, **kwargs)
        if context.local_store and not context.active:
            raise NotImplementedError(
                f"PyroModule '{self._pyro_name or type(self).__name__}': param statements "
                f"{list(context.local_store.keys())} inside a module with module_local_params "
                "are not supported (as in Pyro); make them PyroParam or nn.Parameter attributes"
            )
        return result

    def __getattr__(self, name: str) -> Any:
        state = self.__dict__
        pyro_params = state.get("_pyro_params")
        if pyro_params is not None and name in pyro_params:
            return self._read_pyro_param(name, *pyro_params[name])
        pyro_samples = state.get("_pyro_samples")
        if pyro_samples is not None and name in pyro_samples:
            return self._read_pyro_sample(name, pyro_samples[name])
        context = state.get("_pyro_context")
        # torch keeps parameters and sub-modules in dicts, read here directly (a name is in one
        # dict at most): torch's own lookup and Parameter's isinstance cost more than the rest.
        modules = state.get("_modules", ())
        if context is not None and name in modules:
            result = modules[name]
            if isinstance(result, PyroModule):
                if not result._pyro_name:
                    # A sub-module converted in place (to_pyro_module_) joins on first read.
                    result._pyro_set_supermodule(_make_name(self._pyro_name, name), context)
            elif result is not None and context.active:
                fullname = _make_name(self._pyro_name, name)
                if not _MODULE_LOCAL_PARAMS:
                    module(fullname, result)
                else:
                    for pname, leaf in result.named_parameters():
                        full = module_param_name(fullname, pname)
                        _local_param(full, _with_handle(leaf), constraints.real, None)
            return result
        parameters = state.get("_parameters", ())
        if context is not None and name in parameters:
            result = parameters[name]
            if (
                context.active
                and result is not None
                and (type(result) is torch.nn.Parameter or isinstance(result, torch.nn.Parameter))
                and not name.endswith("_unconstrained")
            ):
                if not _MODULE_LOCAL_PARAMS:
                    param(_make_name(self._pyro_name, name), result)
                else:
                    fullname = _make_name(self._pyro_name, name)
                    _local_param(fullname, _with_handle(result), constraints.real, None)
            return result
        return super().__getattr__(name)

    def _read_pyro_param(
        self, name: str, constraint: constraints.Constraint, event_dim: int | None
    ) -> torch.Tensor:
        leaf = self._parameters[name + "_unconstrained"]
        if not self._pyro_context.active:
            value = constraint_transform(name, constraint)(leaf)
            value.unconstrained = weakref.ref(leaf)
            return value
        fullname = _make_name(self._pyro_name, name)
        if _MODULE_LOCAL_PARAMS:
            value = constraint_transform(fullname, constraint)(leaf)
            if value is leaf:
                _with_handle(leaf)
            else:
                value.unconstrained = weakref.ref(leaf)
            return _local_param(fullname, value, constraint, event_dim)
        store = _CURRENT.get()
        stored = store._params.get(fullname)
        if stored is None:
            _put_in_store(store, fullname, leaf, constraint)  # after a clear: the module's value
        elif stored is not leaf:
            self._parameters[name + "_unconstrained"] = _as_module_leaf(store, fullname)
        return param(fullname, event_dim=event_dim)

    def _read_pyro_sample(self, name: str, prior: Any) -> torch.Tensor:
        context = self._pyro_context
        if not context.active:
            return _draw(prior if _is_distribution(prior) else prior(self))
        fullname = _make_name(self._pyro_name, name)
        value = context.cache.get(fullname)
        if value is None:
            if not _is_distribution(prior):
                prior = prior(self)
            if isinstance(prior, torch.Tensor):
                value = deterministic(fullname, prior)
            else:
                value = sample(fullname, prior)
            context.cache[fullname] = value
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, PyroModule):
            self._drop(name)
            self.add_module(name, value)
        elif isinstance(value, PyroParam):
            self._set_pyro_param(name, *value)
        elif isinstance(value, torch.nn.Parameter):
            self._set_parameter(name, value)
        elif isinstance(value, PyroSample):
            _check_prior(f"{type(self).__name__}.{name}", value.prior)
            self._drop(name)
            self.__dict__["_pyro_samples"][name] = value.prior
        elif isinstance(value, torch.Tensor) and name in self.__dict__.get("_pyro_params", ()):
            # A new value for an existing PyroParam: its leaf is updated in place.
            constraint, _ = self._pyro_params[name]
            owner = f"PyroParam '{self._fullname_or(name)}'"
            u = unconstrain(
                owner, value.detach(), constraint, constraint_transform(owner, constraint)
            )
            with torch.no_grad():
                self._parameters[name + "_unconstrained"].data = u
        else:
            super().__setattr__(name, value)

    def _set_pyro_param(
        self, name: str, init: Any, constraint: constraints.Constraint, event_dim: int | None
    ) -> None:
        if init is None:
            raise ValueError(f"PyroParam '{self._fullname_or(name)}': no init value given")
        context = self._pyro_context
        fullname = _make_name(self._pyro_name, name)
        store = _CURRENT.get()
        owned = name in self._pyro_params or name in self._parameters
        shared = context.active and not _MODULE_LOCAL_PARAMS
        if shared and not owned and fullname in store:
            leaf = _as_module_leaf(store, fullname)  # the store's value wins, as in Pyro
        else:
            leaf = _leaf_parameter(f"PyroParam '{self._fullname_or(name)}'", init, constraint)
        self._drop(name)
        self._pyro_params[name] = constraint, event_dim
        super().__setattr__(name + "_unconstrained", leaf)
        if context.active:
            self._read_pyro_param(name, constraint, event_dim)  # the param statement

    def _set_parameter(self, name: str, value: torch.nn.Parameter) -> None:
        self._drop(name)
        context = self.__dict__.get("_pyro_context")
        if context is not None and context.active and not _MODULE_LOCAL_PARAMS:
            fullname = _make_name(self._pyro_name, name)
            param(fullname, value)
            store = _CURRENT.get()
            if fullname in store:  # (a handler may have given the value instead)
                value = _as_module_leaf(store, fullname)
        super().__setattr__(name, value)

    def _fullname_or(self, name: str) -> str:
        return _make_name(self.__dict__.get("_pyro_name", ""), name)

    def _drop(self, name: str) -> None:
        try:
            delattr(self, name)
        except AttributeError:
            pass

    def __delattr__(self, name: str) -> None:
        state = self.__dict__
        if name in state.get("_pyro_params", ()):
            del self._parameters[name + "_unconstrained"]
            del self._pyro_params[name]
            self._forget(name)
        elif name in state.get("_pyro_samples", ()):
            del self._pyro_samples[name]
        elif name in state.get("_parameters", ()):
            del self._parameters[name]
            if "_pyro_context" in state:
                self._forget(name)
        elif name in state.get("_modules", ()):
            del self._modules[name]
            if "_pyro_context" in state and self._pyro_context.used:
                store = _CURRENT.get()
                path = _make_name(self._pyro_name, name)
                inside = (path + ".", path + MODULE_SEPARATOR)
                for key in [k for k in store.keys() if k == path or k.startswith(inside)]:
                    del store[key]
        else:
            super().__delattr__(name)

    def _forget(self, name: str) -> None:
        if self._pyro_context.used:
            store = _CURRENT.get()
            fullname = _make_name(self._pyro_name, name)
            if fullname in store:
                del store[fullname]


def _pyro_params_of(mod: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    pyro_params = mod.__dict__.get("_pyro_params", {})
    for name, leaf in mod._parameters.items():
        if name.endswith("_unconstrained") and name[: -len("_unconstrained")] in pyro_params:
            name = name[: -len("_unconstrained")]
            yield name, getattr(mod, name)
        else:
            yield name, leaf


def pyro_method(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a method of a :class:`PyroModule` other than ``forward`` that reads its Pyro
    attributes: inside it they make statements, and samples are cached, as in ``__call__``.

    Example::

        >>> from miniprob.distributions import Normal
        >>> class M(PyroModule):
        ...     x = PyroSample(Normal(0.0, 1.0))
        ...     @pyro_method
        ...     def twice(self):
        ...         return self.x - self.x      # one draw, read twice
        >>> M().twice().item()
        0.0
    """

    @functools.wraps(fn)
    def with_context(self: PyroModule, *args: Any, **kwargs: Any) -> Any:
        with self._pyro_context:
            return fn(self, *args, **kwargs)

    return with_context


def clear(mod: PyroModule) -> None:
    """Remove the parameters and sub-modules of ``mod`` from it and from the param store.

    Example::

        >>> import torch
        >>> m = PyroModule()
        >>> m.w = torch.nn.Parameter(torch.zeros(2))
        >>> clear(m); list(m.parameters())
        []
    """
    if not isinstance(mod, PyroModule):
        raise TypeError(f"clear: expected a PyroModule, got {type(mod).__name__}")
    for name in list(mod._pyro_params):
        delattr(mod, name)
    for name in list(mod._parameters):
        delattr(mod, name)
    for name in list(mod._modules):
        delattr(mod, name)


def to_pyro_module_(m: torch.nn.Module, recurse: bool = True) -> None:
    """Make the ``nn.Module`` instance ``m`` a :class:`PyroModule` in place (and its sub-modules
    with ``recurse``), so that third-party modules get Pyro effects unchanged.

    Example::

        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh())
        >>> to_pyro_module_(net)
        >>> isinstance(net, PyroModule[torch.nn.Sequential]), isinstance(net[0], PyroModule)
        (True, True)
    """
    if not isinstance(m, torch.nn.Module):
        raise TypeError(f"to_pyro_module_: expected an nn.Module instance, got {type(m)}")
    if isinstance(m, PyroModule):
        if recurse:
            for name, child in list(m._modules.items()):
                to_pyro_module_(child)
                setattr(m, name, child)
        return
    m.__class__ = PyroModule[m.__class__]
    m._pyro_name = ""
    m._pyro_context = _Context()
    m._pyro_params = OrderedDict()
    m._pyro_samples = OrderedDict()
    for name, leaf in list(m._parameters.items()):
        setattr(m, name, leaf)
    for name, child in list(m._modules.items()):
        if recurse:
            to_pyro_module_(child)
        setattr(m, name, child)


class _FlatWeights:
    """``RNNBase._flat_weights`` computed at each read, so that an RNN's weights may be Pyro
    attributes (torch caches the list of weight tensors otherwise)."""

    def __get__(self, obj: Any, obj_type: type | None = None) -> Any:
        if obj is None:
            return self
        return [getattr(obj, name) for name in obj._flat_weights_names]

    def __set__(self, obj: Any, value: Any) -> None:
        pass  # the list is computed at each read


PyroModule[torch.nn.RNNBase]._flat_weights = _FlatWeights()


class PyroModuleList(torch.nn.ModuleList, PyroModule):
    """``PyroModule[nn.ModuleList]``, whose slices are plain ``nn.ModuleList`` s (a slice built
    as a ``PyroModuleList`` would be a new root and rename the modules it holds).

    Example::

        >>> import torch
        >>> layers = PyroModuleList([PyroModule[torch.nn.Linear](2, 2) for _ in range(3)])
        >>> type(layers[1:]).__name__, PyroModule[torch.nn.ModuleList] is PyroModuleList
        ('ModuleList', True)
    """

    def __init__(self, modules: Any = None) -> None:
        super().__init__(modules)

    def __getitem__(self, idx: int | slice) -> Any:
        if isinstance(idx, slice):
            return torch.nn.ModuleList(list(self._modules.values())[idx])
        return self._modules[self._get_abs_string_index(idx)]


_PyroModuleMeta._mixins[torch.nn.ModuleList] = PyroModuleList
