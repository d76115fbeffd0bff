"""Messages, the handler stack and ``apply_stack``: the one place global state lives.

Every ``sample`` and ``param`` statement builds a :data:`Message` (a plain dict, as in Pyro) and
hands it to :func:`apply_stack`, which lets each active handler see it in turn:

1. ``process_message`` from the innermost handler outward, stopping where ``msg["stop"]`` is set;
2. the default effect (draw a sample or read a parameter) unless a handler already gave a value;
3. ``postprocess_message`` over the handlers visited, outermost first.

The stack lives in a :class:`contextvars.ContextVar` holding an immutable tuple, so each thread
and each asyncio task sees its own handlers: two threads can run inference at once.

Example::

    >>> import miniprob as pyro, torch
    >>> from miniprob import poutine
    >>> with poutine.trace() as tr:
    ...     x = pyro.sample("x", pyro.distributions.Normal(0.0, 1.0))
    >>> list(tr.trace.nodes)
    ['x']
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, NamedTuple

import torch

Message = dict[str, Any]

_STACK: ContextVar[tuple[Messenger, ...]] = ContextVar("miniprob_handler_stack", default=())


class CondIndepStackFrame(NamedTuple):
    """One enclosing ``plate`` as seen by a site: ``dim`` is None for an iterated plate."""

    name: str
    dim: int | None
    size: int
    counter: int
    full_size: int | None = None

    @property
    def vectorized(self) -> bool:
        return self.dim is not None


def get_stack() -> tuple[Messenger, ...]:
    """The active handlers of the current thread or task, outermost first."""
    return _STACK.get()


def am_i_wrapped() -> bool:
    """True when at least one handler is active."""
    return bool(_STACK.get())


class Messenger:
    """Base class of all handlers: a context manager, a decorator, and ``handler(fn)``.

    Subclasses override ``process_message`` (before the default effect) and/or
    ``postprocess_message`` (after it). On exit, through an exception too, a handler removes
    itself and every handler above it, so the stack is always as it was before ``__enter__``.

    Handlers written for Pyro work as they are: a subclass defining Pyro's hooks
    (``_pyro_sample``, ``_pyro_param``, ... before the default effect; ``_pyro_post_sample``,
    ... after it) or overriding ``_process_message`` / ``_postprocess_message`` has them called.

    Example::

        >>> import torch, miniprob as pyro, miniprob.distributions as dist
        >>> class AllOnes(Messenger):
        ...     def _pyro_sample(self, msg):
        ...         msg["value"] = torch.ones(())
        >>> with AllOnes():
        ...     pyro.sample("x", dist.Normal(0.0, 1.0)).item()
        1.0
    """

    def __init__(self, fn: Any = None) -> None:
        self.fn = fn

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Route to Pyro's hooks only in classes that use them: the others keep the no-ops,
        # which cost nothing per message.
        names = dir(cls)
        pre = cls._process_message is not Messenger._process_message or any(
            n.startswith("_pyro_") and not n.startswith("_pyro_post_") for n in names
        )
        post = cls._postprocess_message is not Messenger._postprocess_message or any(
            n.startswith("_pyro_post_") for n in names
        )
        if pre and cls.process_message is Messenger.process_message:
            cls.process_message = _pyro_process
        if post and cls.postprocess_message is Messenger.postprocess_message:
            cls.postprocess_message = _pyro_postprocess

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fn is None:
            # Used as a decorator with arguments: ``@scale(0.5)``.
            if len(args) == 1 and not kwargs and callable(args[0]):
                return self._wrap(args[0])
            raise TypeError(f"{type(self).__name__} has no function to call")
        with self:
            return self.fn(*args, **kwargs)

    def __get__(self, instance: Any, owner: type | None = None) -> Messenger:
        """A handler decorating a method binds like the function it wraps, so that
        ``obj.method(x)`` passes ``obj`` on, as in Pyro; read on the class, or wrapping no
        function, it is the handler itself.

        Example::

            >>> import miniprob as pyro, miniprob.distributions as dist
            >>> from miniprob import poutine
            >>> class Model:
            ...     @poutine.scale(scale=0.5)
            ...     def __call__(self, loc):
            ...         return pyro.sample("x", dist.Normal(loc, 1.0))
            >>> poutine.trace(Model()).get_trace(0.0).nodes["x"]["scale"]
            0.5
        """
        if instance is None or self.fn is None:
            return self
        bind = getattr(type(self.fn), "__get__", None)
        if bind is None:  # a callable object, which a class attribute does not bind either
            return self
        return self._wrap(bind(self.fn, instance, owner))

    def _wrap(self, fn: Any) -> Messenger:
        # A copy, so that one handler can wrap several functions (a model and a guide, as in
        # Pyro) and one method of many objects.
        wrapped = copy.copy(self)
        wrapped.fn = fn
        return wrapped

    def __enter__(self) -> Messenger:
        _STACK.set(_STACK.get() + (self,))
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        stack = _STACK.get()
        if stack and stack[-1] is self:
            _STACK.set(stack[:-1])
            return
        # Exiting out of order (an exception skipped inner exits): drop self and all above it.
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is self:
                _STACK.set(stack[:i])
                return

    def process_message(self, msg: Message) -> None:
        pass

    def postprocess_message(self, msg: Message) -> None:
        pass

    # Pyro's names (see the class docstring).
    def _process_message(self, msg: Message) -> None:
        hook = getattr(self, "_pyro_" + msg["type"], None)
        if hook is not None:
            hook(msg)

    def _postprocess_message(self, msg: Message) -> None:
        hook = getattr(self, "_pyro_post_" + msg["type"], None)
        if hook is not None:
            hook(msg)


def _pyro_process(self: Messenger, msg: Message) -> None:
    self._process_message(msg)


def _pyro_postprocess(self: Messenger, msg: Message) -> None:
    self._postprocess_message(msg)


def _broadcast_to_plates(msg: Message) -> None:
    """Expand a sample site's distribution so its batch shape covers every enclosing plate.

    Pyro expands once per plate; doing it once per site, after all handlers have added their
    plate frames, gives the same shape with one ``expand`` instead of one per plate.
    """
    fn = msg["fn"]
    if not isinstance(fn, torch.distributions.Distribution):
        return
    actual = fn.batch_shape
    shape = list(actual)
    claimed: tuple[int, ...] = ()  # dims a frame has set (another frame may not change them)
    for f in msg["cond_indep_stack"]:
        dim = f.dim
        if dim is None or f.size == -1:
            continue
        if -dim > len(shape):
            shape[:0] = [1] * (-dim - len(shape))
        if shape[dim] != f.size:
            if shape[dim] != 1 or dim in claimed:
                raise ValueError(
                    f"Shape mismatch inside plate('{f.name}') at site {msg['name']} dim {dim}, "
                    f"{f.size} vs {shape[dim]}: at site '{msg['name']}' inside plate('{f.name}') "
                    f"at dim {dim} the plate has size {f.size} but the distribution's "
                    f"batch_shape {tuple(actual)} has size {shape[dim]} there"
                )
            shape[dim] = f.size
        claimed += (dim,)
    shape = tuple(shape)
    if shape != actual:
        try:
            expanded = fn.expand(shape)
        except NotImplementedError:  # no batch semantics (e.g. a plate's index draw)
            return
        if expanded.has_rsample != fn.has_rsample:
            expanded.has_rsample = fn.has_rsample
        msg["fn"] = expanded


def default_process_message(msg: Message) -> None:
    """The effect of a site when no handler supplied a value: call ``fn``."""
    if msg["done"] or msg["is_observed"] or msg["value"] is not None:
        msg["done"] = True
        return
    fn = msg["fn"]
    if callable(fn):
        msg["value"] = fn(*msg["args"], **msg["kwargs"])
    elif isinstance(fn, torch.distributions.Distribution):  # a plain torch distribution
        draw = fn.rsample if fn.has_rsample else fn.sample
        msg["value"] = draw(*msg["args"], **msg["kwargs"])
    else:
        raise TypeError(
            f"{msg['type']} site '{msg['name']}': expected a torch.distributions.Distribution, "
            f"got {type(fn).__name__}: {fn!r}"
        )
    msg["done"] = True


def apply_stack(msg: Message) -> None:
    """Run ``msg`` through the active handlers and the default effect (see module docstring)."""
    stack = _STACK.get()
    pointer = 0  # how many handlers, from the innermost, saw the message
    for handler in reversed(stack):
        pointer += 1
        handler.process_message(msg)
        if msg["stop"]:
            break
    if msg["cond_indep_stack"] and msg["type"] == "sample":
        _broadcast_to_plates(msg)
    default_process_message(msg)
    for handler in stack[len(stack) - pointer :]:
        handler.postprocess_message(msg)
    if msg["continuation"] is not None:
        msg["continuation"](msg)


def effectful(fn: Callable | None = None, type: str | None = None) -> Callable:
    """Make ``fn`` an operation handlers can see: under any handler, a call
    ``f(*args, name=None, infer=None, obs=None, **kwargs)`` becomes a message of ``type`` sent
    through the stack (its value, unless a handler gives one, is ``fn(*args, **kwargs)``);
    outside handlers it is a plain call. ``effectful(type=...)`` is a decorator.

    Example::

        >>> @effectful(type="apply")
        ... def add(x, y):
        ...     return x + y
        >>> class Twice(Messenger):
        ...     def _pyro_apply(self, msg):
        ...         msg["value"] = 2 * msg["fn"](*msg["args"])
        >>> with Twice():
        ...     add(1, 2)
        6
        >>> add(1, 2)
        3
    """
    if fn is None:
        return functools.partial(effectful, type=type)
    if getattr(fn, "_is_effectful", False):
        return fn
    if type is None or type == "message":
        raise ValueError(f"effectful({fn!r}): give the operation a type= other than 'message'")

    @functools.wraps(fn)
    def operation(
        *args: Any, name: str | None = None, infer: dict | None = None, obs: Any = None, **kwargs
    ) -> Any:
        if not _STACK.get():
            return fn(*args, **kwargs)
        msg = new_message(type, name, fn, args, kwargs, obs, obs is not None, infer)
        apply_stack(msg)
        return msg["value"]

    operation._is_effectful = True
    return operation


def _inspect() -> Message:
    """A message that has seen what every active handler does to a message before its effect
    (enclosing plates, masks, scales): Pyro's ``_inspect``. Nothing is drawn and nothing is
    recorded, as no default effect nor ``postprocess_message`` runs on it."""
    msg = new_message("inspect", "_pyro_inspect", lambda: True, infer={"_do_not_trace": True})
    for handler in reversed(_STACK.get()):
        handler.process_message(msg)
        if msg["stop"]:
            break
    return msg


def get_mask() -> bool | torch.Tensor | None:
    """The mask the enclosing ``poutine.mask`` handlers put on a site here (None: no mask).

    Example::

        >>> import torch
        >>> from miniprob import poutine
        >>> with poutine.mask(mask=torch.tensor(False)):
        ...     get_mask()
        tensor(False)
        >>> get_mask() is None
        True
    """
    return _inspect()["mask"]


def get_plates() -> tuple[CondIndepStackFrame, ...]:
    """The frames of the enclosing plates, outermost first.

    Example::

        >>> import miniprob as pyro
        >>> with pyro.plate("a", 2), pyro.plate("b", 3):
        ...     [(f.name, f.dim, f.size) for f in get_plates()]
        [('a', -1, 2), ('b', -2, 3)]
    """
    return _inspect()["cond_indep_stack"]


def new_message(
    type: str,
    name: str,
    fn: Any,
    args: tuple = (),
    kwargs: dict | None = None,
    value: Any = None,
    is_observed: bool = False,
    infer: dict | None = None,
) -> Message:
    """A fresh message with Pyro's fields."""
    return {
        "type": type,
        "name": name,
        "fn": fn,
        "is_observed": is_observed,
        "args": args,
        "kwargs": {} if kwargs is None else kwargs,
        "value": value,
        "scale": 1.0,
        "mask": None,
        "cond_indep_stack": (),
        "done": False,
        "stop": False,
        "continuation": None,
        "infer": {} if infer is None else infer,
    }


class _DimAllocator:
    """Hands plate dims out from the right (-1, -2, ...); one per thread or task.

    The active plate names live in a :class:`ContextVar` as an immutable tuple (like the
    handler stack): a mutable allocator stored there would be shared by every asyncio task
    created after it, so two tasks with a plate of the same name would collide.
    """

    def allocate(self, name: str, dim: int | None) -> int:
        stack = list(_PLATE_NAMES.get())
        if name in stack:
            raise ValueError(f"duplicate plate '{name}': a plate of that name is already active")
        if dim is None:
            dim = -1
            while -dim <= len(stack) and stack[-1 - dim] is not None:
                dim -= 1
        elif dim >= 0:
            raise ValueError(
                f"Expected dim < 0 to index from the right, actual {dim} (plate '{name}')"
            )
        while dim < -len(stack):
            stack.append(None)
        if stack[-1 - dim] is not None:
            raise ValueError(
                f'at plates "{name}" and "{stack[-1 - dim]}", collide at dim={dim}: '
                f"plates '{name}' and '{stack[-1 - dim]}' both claim dim={dim}; "
                f"give one of them another dim, e.g. dim={dim - 1}"
            )
        stack[-1 - dim] = name
        _PLATE_NAMES.set(tuple(stack))
        return dim

    @property
    def _stack(self) -> list[str | None]:
        """Pyro's view: index ``-1 - dim`` holds the name of the plate using ``dim``."""
        return list(_PLATE_NAMES.get())

    def free(self, name: str, dim: int) -> None:
        stack = list(_PLATE_NAMES.get())
        i = -1 - dim
        if i < len(stack) and stack[i] == name:
            stack[i] = None
        while stack and stack[-1] is None:
            stack.pop()
        _PLATE_NAMES.set(tuple(stack))


# Index -1 - dim holds the name of the plate using ``dim`` (None where the dim is free).
_PLATE_NAMES: ContextVar[tuple[str | None, ...]] = ContextVar("miniprob_plate_dims", default=())
_DIM_ALLOCATOR = _DimAllocator()


def dim_allocator() -> _DimAllocator:
    """The plate-dim allocator; its state is per thread and task."""
    return _DIM_ALLOCATOR
