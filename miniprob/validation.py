"""The validation switch, and the site checks it turns on.

Validation is on by default and cheap: an observed value is checked against its distribution's
support once per value (the same tensor, unmodified, is not checked again). "Unmodified" is read
from the tensor's version counter, which in-place torch ops bump; writes that do not bump it
(through ``.data``, or to a NumPy array shared with ``torch.from_numpy``) are not seen, and the
changed value is not checked again: that is the cost of checking once. The cache holds weak
references, so it keeps no data alive.

Example::

    >>> import miniprob as pyro
    >>> pyro.validation_enabled()
    True
    >>> pyro.enable_validation(False); pyro.validation_enabled()
    False
    >>> pyro.enable_validation(True)
"""

from __future__ import annotations

import functools
import inspect
import weakref
from typing import Any

import torch
from torch.distributions import constraints

from .distributions.delta import Delta
from .distributions.shape import MaskedDistribution
from .distributions.unit import Unit
from .runtime import Messenger

_ENABLED = [True]


def enable_validation(is_validate: bool = True) -> None:
    """Turn miniprob's site checks on or off (on by default)."""
    _ENABLED[0] = bool(is_validate)


def is_validation_enabled() -> bool:
    """Whether miniprob's site checks are on (Pyro's name for the getter)."""
    return _ENABLED[0]


def check_names(value: Any, what: str) -> None:
    """Raise ``TypeError`` if ``value``, where a collection of names is expected, is a single
    string (which would be read as one name per character).

    Example::

        >>> check_names(["a", "b"], "hide")
        >>> check_names("ab", "block: hide")
        Traceback (most recent call last):
        ...
        TypeError: block: hide must be a list, tuple or set of names, got the string 'ab' (wr...
    """
    if isinstance(value, str | bytes):
        raise TypeError(
            f"{what} must be a list, tuple or set of names, got the string {value!r} "
            f"(write [{value!r}])"
        )


def _unwrapped(fn: Any) -> Any:
    """The function a handler, ``functools.partial`` or bound method runs."""
    for _ in range(100):  # a bound on the chain, against a handler wrapping itself
        inner = fn.fn if isinstance(fn, Messenger) else None
        if inner is None and isinstance(fn, functools.partial):
            inner = fn.func
        if inner is None and inspect.ismethod(fn):
            inner = fn.__func__
        if inner is None:
            break
        fn = inner
    if not inspect.isroutine(fn) and callable(fn):
        fn = getattr(type(fn), "forward", None) or type(fn).__call__
    return fn


def check_program(fn: Any, role: str, where: str) -> None:
    """Raise ``TypeError`` if ``fn`` (a model or guide) is not callable, or is a generator
    function or an ``async def``: calling one runs none of its statements, so inference would
    see no site at all and silently return 0.

    Example::

        >>> async def model():
        ...     pass
        >>> try:
        ...     check_program(model, "model", "SVI")
        ... except TypeError as e:
        ...     print(str(e)[:67])
        SVI: the model 'model' is a coroutine function (async def); calling
    """
    if not callable(fn):
        raise TypeError(f"{where}: the {role} must be callable, got {type(fn).__name__}")
    inner = _unwrapped(fn)
    kind = None
    if inspect.isasyncgenfunction(inner):
        kind = "an async generator function"
    elif inspect.iscoroutinefunction(inner):
        kind = "a coroutine function (async def)"
    elif inspect.isgeneratorfunction(inner):
        kind = "a generator function (it yields)"
    if kind is not None:
        name = getattr(inner, "__qualname__", None) or repr(inner)
        raise TypeError(
            f"{where}: the {role} {name!r} is {kind}; calling it runs none of its statements. "
            "Use a plain def"
        )


class validation_enabled:  # noqa: N801 (a function in Pyro, and in use)
    """Pyro's context manager, validation on (or ``is_validate``) inside, the previous state
    restored on exit; called with no argument outside a ``with``, it also reads as whether the
    checks are on (``bool(validation_enabled())``), as miniprob's getter of that name did.

    Example::

        >>> import miniprob as pyro
        >>> with pyro.validation_enabled(False):
        ...     pyro.validation_enabled()
        False
        >>> bool(pyro.validation_enabled())
        True
    """

    __slots__ = ("is_validate", "_previous")

    def __init__(self, is_validate: bool = True) -> None:
        self.is_validate = is_validate

    def __enter__(self) -> validation_enabled:
        self._previous = _ENABLED[0]
        enable_validation(self.is_validate)
        return self

    def __exit__(self, *exc: object) -> None:
        _ENABLED[0] = self._previous

    def __bool__(self) -> bool:
        return _ENABLED[0]

    def __eq__(self, other: object) -> bool:
        return _ENABLED[0] == other

    __hash__ = None  # equal to a bool that changes: not hashable

    def __repr__(self) -> str:
        return repr(_ENABLED[0])


def as_observation(obs: object, name: str = "?") -> torch.Tensor:
    """A Python number, list or array given as an observation at site ``name``, as a tensor
    (torch's ``log_prob`` methods need one); integers and bools take the default float dtype.
    Anything else (a string, a ragged list) is a ``TypeError`` naming the site.

    Example::

        >>> as_observation(1)
        tensor(1.)
    """
    if isinstance(obs, str | bytes):
        converted = None
    else:
        try:
            converted = torch.as_tensor(obs)
        except (TypeError, ValueError, RuntimeError):
            converted = None
    if converted is None or not (converted.is_floating_point() or converted.dtype in _NUMERIC):
        raise TypeError(
            f"sample site '{name}': the observed value must be a tensor, a number, or a list or "
            f"array of numbers, got {type(obs).__name__} {obs!r:.80}"
        )
    if converted.is_floating_point():
        return converted
    return converted.to(torch.get_default_dtype())


# Non-floating dtypes an observation may arrive in (converted to the default float dtype).
_NUMERIC = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


# Per site name: the last observed tensor checked (weakly: the cache must not keep a data set
# alive), its version counter and the distribution's type.
_CHECKED_OBS: dict[str, tuple[weakref.ref[torch.Tensor], int, type]] = {}


# Distributions whose ``log_prob`` leaves the value's shape to the distribution inside them, and
# those whose ``log_prob`` never checks it: under Pyro's validation (torch's ``_validate_sample``)
# these accept values whose event dims only broadcast, so miniprob accepts them too.
_SHAPE_FROM_BASE = (torch.distributions.Independent, MaskedDistribution)
_SHAPE_UNCHECKED = (Delta, Unit)


def _check_event_shape(
    name: str, fn: torch.distributions.Distribution, value: torch.Tensor
) -> None:
    """Raise, as torch's ``_validate_sample`` would under Pyro, if the right-most dims of
    ``value`` are not the event shape of the distribution whose ``log_prob`` checks them."""
    while isinstance(fn, _SHAPE_FROM_BASE):
        fn = fn.base_dist
    if isinstance(fn, _SHAPE_UNCHECKED):
        return
    event_shape = fn.event_shape
    if value.shape[value.dim() - len(event_shape) :] != event_shape:
        raise ValueError(
            f"sample site '{name}': the right-most size of the observed value must match "
            f"event_shape: value of shape {tuple(value.shape)}, {type(fn).__name__} with "
            f"event_shape {tuple(event_shape)}"
        )


def _elementwise(support: constraints.Constraint, value: torch.Tensor) -> constraints.Constraint:
    """The constraint to check element by element: an independent constraint over an
    elementwise one holds where the elementwise one holds everywhere, so check that one and
    skip the reshape and reduction over the event dims (a minibatch is checked at every step)."""
    while (
        isinstance(support, constraints.independent)
        and support.base_constraint.event_dim == 0
        and value.dim() >= support.reinterpreted_batch_ndims
    ):
        support = support.base_constraint
    return support


def _holds(support: constraints.Constraint, value: torch.Tensor) -> bool:
    """Whether ``value`` lies in ``support`` everywhere. For ``boolean`` (a Bernoulli's
    minibatch, checked at every step) one comparison with the nearest of 0 and 1 replaces
    torch's two comparisons, an ``or`` and a reduction; NaN and infinities fail it too."""
    if support is constraints.boolean and value.is_floating_point():
        return torch.equal(value, value.round().clamp(0, 1))
    return bool(support.check(value).all())


def check_observed(name: str, fn: torch.distributions.Distribution, value: torch.Tensor) -> None:
    """Raise if ``value`` does not fit ``fn.event_shape`` or lies outside ``fn.support`` (NaN
    lies outside every support, ``real`` included).

    A fixed support (a class attribute) is checked once per tensor and version; a support that
    depends on the distribution's parameters is checked every time, as is a tensor made under
    ``torch.inference_mode()`` (it has no version counter to tell a later change by).

    Example::

        >>> import torch, miniprob.distributions as dist
        >>> check_observed("x", dist.Normal(0.0, 1.0), torch.tensor(float("nan")))
        Traceback (most recent call last):
        ...
        ValueError: sample site 'x': observed value lies outside the support Real() of Normal
    """
    # The shape check costs no kernel and the cache does not cover it (two distributions of
    # one type can have different event shapes), so it runs every time; with no event dims
    # (a Normal, a Bernoulli) there is nothing to check, in the distributions inside neither.
    if fn.event_shape:
        _check_event_shape(name, fn, value)
    seen = _CHECKED_OBS.get(name)
    # Only tensors with a version counter are cached, so reading ``_version`` here is safe.
    if (
        seen is not None
        and seen[0]() is value
        and seen[1] == value._version
        and seen[2] is type(fn)
    ):
        return
    try:
        support = fn.support
    except NotImplementedError:
        return
    if support is None or constraints.is_dependent(support):  # cannot be checked
        ok = True
    else:
        with torch.no_grad():
            try:
                ok = _holds(_elementwise(support, value), value)
            except RuntimeError:  # batched by torch.vmap: no single truth value to check
                return
            except ValueError as e:  # e.g. fewer dims than the event has
                raise ValueError(
                    f"sample site '{name}': observed value of shape {tuple(value.shape)} does not "
                    f"fit {type(fn).__name__} with batch shape {tuple(fn.batch_shape)} and event "
                    f"shape {tuple(fn.event_shape)}: {e}"
                ) from e
    if not ok:
        raise ValueError(
            f"sample site '{name}': observed value lies outside the support {support} of "
            f"{type(fn).__name__}"
        )
    if support is not getattr(type(fn), "support", None):
        return  # the support depends on the parameters (e.g. Uniform(0, theta)): check each time
    if value.is_inference():
        return
    if len(_CHECKED_OBS) > 10_000:
        _CHECKED_OBS.clear()
    _CHECKED_OBS[name] = (weakref.ref(value), value._version, type(fn))
