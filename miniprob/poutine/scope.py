"""Names: ``scope`` puts a prefix and ``/`` before the names of the sample sites inside (as
TensorFlow's name scopes), ``name_count`` adds ``__1``, ``__2``, ... to names met again.

Entering a scope is itself an effect (a ``"scope"`` message), so that ``name_count`` can count
scopes too: ``with scope(prefix="a")`` entered three times gives ``a/x``, ``a__1/x``,
``a__2/x``. With ``inner=True`` a scope is not counted, and the counter lands on the inner
names (``a/x``, ``a/x__1``, ...). These are Pyro's ``pyro.contrib.autoname`` handlers.

Example::

    >>> import miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob import poutine
    >>> @poutine.scope(prefix="b")
    ... def model():
    ...     with poutine.scope(prefix="a"):
    ...         return pyro.sample("x", dist.Bernoulli(0.5))
    >>> list(poutine.trace(model).get_trace().stochastic_nodes)
    ['b/a/x']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..runtime import Message, Messenger, am_i_wrapped, apply_stack, new_message


def _last_scope(prefixed_scope: str) -> str:
    return prefixed_scope.split("/")[-1]


def _enter_scope(prefix: str) -> str:
    # The scope's own name as the handlers outside see it (``name_count`` may number it).
    if not am_i_wrapped():
        return _last_scope(prefix)
    msg = new_message("scope", None, _last_scope, (prefix,))
    apply_stack(msg)
    return msg["value"]


class scope(Messenger):
    """Prefix the names of the sample sites inside with ``prefix + "/"``.

    Used as a decorator or on a function without a prefix, the prefix is the function's name.
    Scopes nest, the outer prefix first.

    :param fn: the stochastic function (optional).
    :param prefix: the prefix (optional when ``fn`` is given).
    :param inner: do not count this scope under ``name_count`` (the counter goes to the
        inner names instead).

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> from miniprob import poutine
        >>> @poutine.scope
        ... def model():
        ...     return pyro.sample("x", dist.Bernoulli(0.5))
        >>> "model/x" in poutine.trace(model).get_trace()
        True
    """

    def __init__(
        self, fn: Callable | None = None, prefix: str | None = None, inner: bool | None = None
    ) -> None:
        if isinstance(fn, str):
            fn, prefix = None, fn
        if prefix is not None and not isinstance(prefix, str):
            raise TypeError(f"scope: 'prefix' should be a str, got {type(prefix).__name__}")
        super().__init__(fn)
        if prefix is None and fn is not None:
            prefix = fn.__code__.co_name
        self.prefix = prefix
        self.inner = inner
        self._entered: list[str] = []  # the prefix of each active entry, innermost last

    def _wrap(self, fn: Callable) -> scope:
        wrapped = super()._wrap(fn)
        wrapped._entered = []
        if wrapped.prefix is None:
            wrapped.prefix = fn.__code__.co_name
        return wrapped

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fn is None:
            return super().__call__(*args, **kwargs)
        # A fresh handler per call, as in Pyro: a recursive function nests its own scopes, each
        # on the stack with the prefix it was entered with.
        with self._wrap(self.fn):
            return self.fn(*args, **kwargs)

    def __enter__(self) -> scope:
        if self.prefix is None:
            raise ValueError("no prefix was provided")
        self._entered.append(self.prefix if self.inner else _enter_scope(self.prefix))
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._entered.pop()
        super().__exit__(*exc)

    def process_message(self, msg: Message) -> None:
        kind = msg["type"]
        if kind == "sample":
            msg["name"] = f"{self._entered[-1]}/{msg['name']}"
        elif kind == "scope":
            msg["args"] = (f"{self._entered[-1]}/{msg['args'][0]}",)


class name_count(Messenger):
    """Give a sample site whose name was already used in this run the suffix ``__1`` (then
    ``__2``, ...); a scope entered again is numbered the same way.

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> from miniprob import poutine
        >>> @poutine.name_count
        ... def model():
        ...     for _ in range(3):
        ...         pyro.sample("x", dist.Bernoulli(0.5))
        >>> list(poutine.trace(model).get_trace().stochastic_nodes)
        ['x', 'x__1', 'x__2']
    """

    def __init__(self, fn: Callable | None = None) -> None:
        super().__init__(fn)
        self._names: set[tuple[str, str]] = set()

    def __enter__(self) -> name_count:
        self._names = set()
        return super().__enter__()

    def _increment_name(self, name: str, label: str) -> str:
        while (name, label) in self._names:
            stem, sep, count = name.rpartition("__")
            name = f"{stem}__{int(count) + 1}" if sep and count.isdigit() else name + "__1"
        return name

    def process_message(self, msg: Message) -> None:
        if msg["type"] == "sample":
            msg["name"] = self._increment_name(msg["name"], "sample")
        elif msg["type"] == "scope":
            msg["args"] = (self._increment_name(msg["args"][0], "scope"),)

    def postprocess_message(self, msg: Message) -> None:
        if msg["type"] == "sample":
            self._names.add((msg["name"], "sample"))
        elif msg["type"] == "scope":
            self._names.add((msg["args"][0], "scope"))
