"""Pyro's ``pyro.nn``: modules whose attributes are ``param`` and ``sample`` statements.

:class:`PyroModule` (and ``PyroModule[nn.Linear]``), :class:`PyroParam`, :class:`PyroSample`,
:func:`pyro_method`, :func:`to_pyro_module_` and :class:`PyroModuleList`, from
:mod:`miniprob.nn.module` (Pyro's path for them too).
"""

from .module import (
    PyroModule,
    PyroModuleList,
    PyroParam,
    PyroSample,
    clear,
    pyro_method,
    to_pyro_module_,
)

__all__ = [
    "PyroModule",
    "PyroModuleList",
    "PyroParam",
    "PyroSample",
    "clear",
    "pyro_method",
    "to_pyro_module_",
]
