"""A pytest plugin (``-p miniprob_as_pyro``) that makes ``import pyro`` and ``import pyro.X``
give ``miniprob`` and ``miniprob.X``: one module object under two names, so that Pyro's own test
files run against miniprob unchanged.

Importing this module changes nothing; the alias is installed by the pytest hook
:func:`pytest_load_initial_conftests`, which runs before Pyro's ``tests/conftest.py`` imports
``pyro``, or by calling :func:`install`. Use it only in a process of its own (the runner in
:mod:`tests.pyro_suite.run` starts one per test file): once installed, the real Pyro cannot be
imported in that process.

Example::

    >>> AliasFinder().find_spec("numpy", None) is None  # names other than pyro.* are not its
    True
    >>> missing("pyro.infer.MCMC").kernel.__name__
    'kernel'
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any


class _Missing(type):
    """The class of placeholders: any attribute is another placeholder; calling one (or a class
    derived from one) raises ``NotImplementedError`` naming what miniprob lacks."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return missing(f"{cls._missing_path}.{name}")

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"miniprob has no {cls._missing_path} (harness placeholder)")


def missing(path: str) -> type:
    """A placeholder for the Pyro name ``path`` that miniprob lacks."""
    return _Missing(path.rsplit(".", 1)[-1], (), {"_missing_path": path})


def _lenient_getattr(module: ModuleType, pyro_name: str) -> Any:
    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if module.__name__.startswith("miniprob"):
            try:  # a submodule not imported yet (``from pyro.poutine import runtime``)
                return importlib.import_module(f"{module.__name__}.{name}")
            except ImportError:
                pass
        return missing(f"{pyro_name}.{name}")

    return __getattr__


class AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``pyro`` and ``pyro.*`` as the matching ``miniprob`` modules.

    Lenient (the default), a name or module miniprob lacks is a placeholder (see
    :func:`missing`), so that a test file importing one still runs its other tests; strict, it
    is an ``ImportError``, as plain Python gives.
    """

    source = "pyro"
    target = "miniprob"

    def __init__(self, lenient: bool = True) -> None:
        self.lenient = lenient

    def find_spec(self, fullname: str, path: Any, target: Any = None):
        if fullname != self.source and not fullname.startswith(self.source + "."):
            return None
        real = self.target + fullname[len(self.source) :]
        try:
            real_spec = importlib.util.find_spec(real)
        except ModuleNotFoundError:  # its parent is missing too
            real_spec = None
        if real_spec is None:
            if not self.lenient:
                return None
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        is_package = real_spec.submodule_search_locations is not None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=is_package)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        real = self.target + spec.name[len(self.source) :]
        try:
            module = importlib.import_module(real)
        except ModuleNotFoundError:
            module = ModuleType(spec.name, "placeholder of the Pyro test harness")
            module.__path__ = []
        if self.lenient and "__getattr__" not in vars(module):
            module.__getattr__ = _lenient_getattr(module, spec.name)
        return module

    def exec_module(self, module: ModuleType) -> None:
        pass  # already executed under its own name


def install(lenient: bool | None = None) -> None:
    """Put the alias first on ``sys.meta_path`` (no-op when already there); ``lenient`` None
    reads ``$MINIPROB_PYRO_SUITE_STRICT`` (set: strict)."""
    if any(isinstance(f, AliasFinder) for f in sys.meta_path):
        return
    if "pyro" in sys.modules and not sys.modules["pyro"].__name__.startswith("miniprob"):
        raise RuntimeError("the real pyro is already imported in this process; alias it first")
    if lenient is None:
        lenient = not os.environ.get("MINIPROB_PYRO_SUITE_STRICT")
    sys.meta_path.insert(0, AliasFinder(lenient))


def pytest_load_initial_conftests(early_config: Any, parser: Any, args: Any) -> None:
    install()
