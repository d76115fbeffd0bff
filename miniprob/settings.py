"""Global settings under Pyro's interface (``pyro.settings``): ``get``, ``set``, ``context``
and ``register``, each setting an alias for a module attribute (``"module", "Deep.name"``).

miniprob has one validation switch where Pyro has several: ``validate_distributions_pyro``,
``validate_poutine`` and ``validate_infer`` all read and set it
(:func:`miniprob.enable_validation`); ``validate_distributions_torch`` is torch's default for
``validate_args``.

Example::

    >>> import miniprob as pyro
    >>> with pyro.settings.context(validate_poutine=False):
    ...     pyro.settings.get("validate_infer")
    False
    >>> pyro.settings.get("validate_infer")
    True
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import import_module
from typing import Any

# alias -> (module name, dotted attribute name, validator or None)
_REGISTRY: dict[str, tuple[str, str, Callable[[Any], None] | None]] = {}


def _lookup(alias: str) -> tuple[str, str, Callable[[Any], None] | None]:
    try:
        return _REGISTRY[alias]
    except KeyError:
        raise KeyError(
            f"no setting named '{alias}' (registered: {', '.join(sorted(_REGISTRY))})"
        ) from None


def get(alias: str | None = None) -> Any:
    """The value of one setting, or a dict of all of them (``alias=None``)."""
    if alias is None:
        return {name: get(name) for name in sorted(_REGISTRY)}
    module, deep_name, _ = _lookup(alias)
    value: Any = import_module(module)
    for name in deep_name.split("."):
        value = getattr(value, name)
    return value


def set(**kwargs: Any) -> None:
    """Set settings by alias: ``set(validate_poutine=False)``."""
    for alias, value in kwargs.items():
        module, deep_name, validator = _lookup(alias)
        if validator is not None:
            validator(value)
        *path, last = deep_name.split(".")
        target: Any = import_module(module)
        for name in path:
            target = getattr(target, name)
        setattr(target, last, value)


@contextmanager
def context(**kwargs: Any) -> Iterator[None]:
    """Set settings inside a ``with`` block (or a decorated function), restoring them after."""
    old = {alias: get(alias) for alias in kwargs}
    try:
        set(**kwargs)
        yield
    finally:
        set(**old)


def register(
    alias: str, modulename: str, deepname: str, validator: Callable[[Any], None] | None = None
) -> Callable:
    """Register a setting: ``alias`` names the attribute ``deepname`` of module ``modulename``.
    Returns a decorator that registers a validator (called with each value set), as in Pyro.

    Example::

        >>> import miniprob.settings as settings
        >>> _ = settings.register("my_threshold", "math", "pi")
        >>> round(settings.get("my_threshold"), 2)
        3.14
        >>> del settings._REGISTRY["my_threshold"]
    """
    _REGISTRY[alias] = (modulename, deepname, validator)

    def set_validator(fn: Callable[[Any], None]) -> Callable[[Any], None]:
        _REGISTRY[alias] = (modulename, deepname, fn)
        return fn

    return set_validator


class _ValidationFlag:
    """miniprob's validation switch as an attribute, for :func:`register`."""

    @property
    def enabled(self) -> bool:
        from .validation import is_validation_enabled

        return is_validation_enabled()

    @enabled.setter
    def enabled(self, value: bool) -> None:
        from .validation import enable_validation

        enable_validation(value)


def _check_bool(value: Any) -> None:
    if not isinstance(value, builtins.bool):
        raise TypeError(f"expected a bool, got {type(value).__name__}: {value!r}")


VALIDATION = _ValidationFlag()
for _alias in ("validate_distributions_pyro", "validate_poutine", "validate_infer"):
    register(_alias, __name__, "VALIDATION.enabled", _check_bool)
register(
    "validate_distributions_torch",
    "torch.distributions.distribution",
    "Distribution._validate_args",
    _check_bool,
)

__all__ = ["context", "get", "register", "set"]
