"""Leaving a run early: ``escape`` stops a model at a chosen site by raising
:class:`NonlocalExit`, and ``queue`` uses it to enumerate discrete sites one at a time.

``queue`` is the sequential enumeration of Pyro's effect-handlers tutorial: it takes a partial
trace from a queue, replays the model on it until the first discrete site the trace lacks,
escapes there, and puts back one extended trace per value of that site (``extend_fn``), until a
run completes. Each escape resets the handlers left on the stack (a ``trace`` outside starts
over), as Pyro's ``NonlocalExit.reset_stack`` does.

Example::

    >>> import queue as std_queue, miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob import poutine
    >>> def model():
    ...     return pyro.sample("x", dist.Bernoulli(0.5)).item()
    >>> q = std_queue.Queue()
    >>> q.put(poutine.Trace())
    >>> enumerated = poutine.queue(model, queue=q)
    >>> sorted([enumerated(), enumerated()])
    [0.0, 1.0]
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

from ..runtime import Message, Messenger, get_stack
from .handlers import block, replay, trace
from .util import discrete_escape, enum_extend


class NonlocalExit(Exception):
    """Raised by ``escape`` at the site it stops at; ``site`` holds that site's message."""

    def __init__(self, site: Message, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.site = site

    def reset_stack(self) -> None:
        """Reset the handlers still on the stack, from the innermost outward, up to a ``block``
        that hides the site (a ``trace`` forgets what it recorded), so the run can start over.
        """
        for handler in reversed(get_stack()):
            reset = getattr(handler, "_reset", None)
            if reset is not None:
                reset()
            if isinstance(handler, block) and handler.hide_fn(self.site):
                break


def _raise_nonlocal_exit(msg: Message) -> None:
    raise NonlocalExit(msg)


class escape(Messenger):
    """Stop the run at the first sample site where ``escape_fn(site)`` is true, raising
    :class:`NonlocalExit` (holding the site) once the handlers inside have seen it; the
    handlers outside never see that site.

    :param fn: the stochastic function.
    :param escape_fn: a function from a site (message) to a bool.

    Example::

        >>> import miniprob as pyro, miniprob.distributions as dist
        >>> from miniprob import poutine
        >>> def model():
        ...     pyro.sample("a", dist.Normal(0.0, 1.0))
        ...     pyro.sample("b", dist.Normal(0.0, 1.0))
        >>> try:
        ...     poutine.escape(model, escape_fn=lambda msg: msg["name"] == "b")()
        ... except poutine.NonlocalExit as e:
        ...     print(e.site["name"])
        b
    """

    def __init__(
        self, fn: Callable | None = None, escape_fn: Callable[[Message], bool] | None = None
    ) -> None:
        super().__init__(fn)
        if not callable(escape_fn):
            raise TypeError(
                "escape: 'escape_fn' should be a function from a site to a bool, "
                f"got {type(escape_fn).__name__}"
            )
        self.escape_fn = escape_fn

    def process_message(self, msg: Message) -> None:
        if msg["type"] == "sample" and self.escape_fn(msg):
            msg["done"] = True
            msg["stop"] = True
            msg["continuation"] = _raise_nonlocal_exit


class queue:
    """Run ``fn`` to completion on partial traces taken from ``queue``, extending them at
    each discrete site they lack (sequential enumeration; see the module docstring).

    :param fn: the stochastic function (None: ``queue(...)`` is a decorator).
    :param queue: a queue of partial traces (``queue.Queue``, ``multiprocessing.Queue``),
        holding at least one (an empty ``Trace`` to start).
    :param max_tries: how many partial traces to try per call (default one million).
    :param extend_fn: ``(trace, site, num_samples=...) -> list of traces`` (default
        :func:`~miniprob.poutine.util.enum_extend`).
    :param escape_fn: ``(trace, site) -> bool``, where to stop (default
        :func:`~miniprob.poutine.util.discrete_escape`).
    :param num_samples: passed on to ``extend_fn`` (default -1: all values).

    Example::

        >>> import queue as std_queue, torch, miniprob as pyro, miniprob.distributions as dist
        >>> from miniprob import poutine
        >>> def model():
        ...     return pyro.sample("k", dist.Categorical(torch.ones(3))).item()
        >>> q = std_queue.Queue()
        >>> q.put(poutine.Trace())
        >>> run = poutine.queue(model, queue=q)
        >>> sorted(run() for _ in range(3))
        [0, 1, 2]
    """

    def __init__(
        self,
        fn: Callable | None = None,
        queue: Any = None,
        max_tries: int | None = None,
        extend_fn: Callable | None = None,
        escape_fn: Callable | None = None,
        num_samples: int | None = None,
    ) -> None:
        if queue is None or not (hasattr(queue, "get") and hasattr(queue, "put")):
            raise TypeError(
                f"queue: 'queue' should be a queue of partial traces (with get and put), "
                f"got {type(queue).__name__}"
            )
        self.fn = fn
        self.queue = queue
        self.max_tries = int(1e6) if max_tries is None else max_tries
        self.extend_fn = enum_extend if extend_fn is None else extend_fn
        self.escape_fn = discrete_escape if escape_fn is None else escape_fn
        self.num_samples = -1 if num_samples is None else num_samples

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fn is None:
            if len(args) == 1 and not kwargs and callable(args[0]):  # ``@queue(queue=q)``
                wrapped = copy.copy(self)
                wrapped.fn = args[0]
                return wrapped
            raise TypeError("queue has no function to call")
        for _ in range(self.max_tries):
            if self.queue.empty():
                raise ValueError(
                    "queue: the queue of partial traces is empty (trying to get() from an empty "
                    "queue would deadlock); put a Trace() in it to start"
                )
            partial = self.queue.get()
            tracer = trace(
                escape(
                    replay(self.fn, trace=partial),
                    escape_fn=functools.partial(self.escape_fn, partial),
                )
            )
            try:
                return tracer(*args, **kwargs)
            except NonlocalExit as exit_:
                exit_.reset_stack()
                extended = self.extend_fn(
                    tracer.trace.copy(), exit_.site, num_samples=self.num_samples
                )
                for extended_trace in extended:
                    self.queue.put(extended_trace)
        raise ValueError(f"max tries ({self.max_tries}) exceeded")
