"""Global settings, as Pyro's ``pyro.settings``: ``get``, ``set``, ``context`` and ``register``.

A setting is a module-level variable registered under an alias, with an optional validator;
``set`` validates every value before changing any. miniprob registers ``module_local_params``
(:mod:`miniprob.nn.module`); an alias no module registered is an error naming the known ones.

Example::

    >>> import miniprob as pyro
    >>> with pyro.settings.context(module_local_params=True):
    ...     pyro.settings.get("module_local_params")
    True
    >>> pyro.settings.get("module_local_params")
    False
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_REGISTRY: dict[str, tuple[str, str, Callable[[Any], None] | None]] = {}


def _entry(alias: str) -> tuple[str, str, Callable[[Any], None] | None]:
    try:
        return _REGISTRY[alias]
    except KeyError:
        raise KeyError(f"settings: no setting '{alias}'; known: {sorted(_REGISTRY)}") from None


def get(alias: str | None = None) -> Any:
    """The value of setting ``alias``, or a dict of all settings when ``alias`` is None.

    Example::

        >>> get()["module_local_params"]
        False
    """
    if alias is None:
        return {name: get(name) for name in _REGISTRY}
    modulename, varname, _ = _entry(alias)
    return getattr(sys.modules[modulename], varname)


def set(**kwargs: Any) -> None:  # noqa: A001 (Pyro's name)
    """Set the settings given as keywords; all are validated before any is changed.

    Example::

        >>> set(module_local_params=True); get("module_local_params")
        True
        >>> set(module_local_params=False)
    """
    for alias, value in kwargs.items():
        _, _, validator = _entry(alias)
        if validator is not None:
            validator(value)
    for alias, value in kwargs.items():
        modulename, varname, _ = _REGISTRY[alias]
        setattr(sys.modules[modulename], varname, value)


@contextmanager
def context(**kwargs: Any) -> Iterator[None]:
    """Set the settings given as keywords inside the ``with`` block, restoring them on exit.

    Example::

        >>> with context(module_local_params=True):
        ...     get("module_local_params")
        True
    """
    old = {alias: get(alias) for alias in kwargs}
    set(**kwargs)
    try:
        yield
    finally:
        set(**old)


def register(
    alias: str, modulename: str, varname: str, validator: Callable[[Any], None] | None = None
) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
    """Register the variable ``varname`` of module ``modulename`` as setting ``alias``; the
    returned decorator registers the function it decorates as the validator (as in Pyro).

    Example::

        >>> import sys, types
        >>> sys.modules["example_settings"] = types.SimpleNamespace(LIMIT=3)
        >>> @register("example_limit", "example_settings", "LIMIT")
        ... def _check(value):
        ...     if value < 0:
        ...         raise ValueError("example_limit: should be >= 0")
        >>> get("example_limit")
        3
        >>> del _REGISTRY["example_limit"], sys.modules["example_settings"]
    """
    _REGISTRY[alias] = modulename, varname, validator

    def decorator(fn: Callable[[Any], None]) -> Callable[[Any], None]:
        _REGISTRY[alias] = modulename, varname, fn
        return fn

    return decorator
