"""Parallel enumeration of discrete sites: ``enum`` and ``markov``.

``enum`` gives each sample site marked ``infer={"enumerate": "parallel"}`` a tensor dim of its
own, left of the ``max_plate_nesting`` dims that plates use, and sets the site's value to the
distribution's whole support laid along that dim (``enumerate_support``). Everything downstream
then broadcasts over all the values at once, and an ELBO can sum the variable out exactly.
Dims are handed out leftwards from ``first_available_dim``; ``markov`` lets a chain reuse them:
inside a ``markov`` context a site sees only the sites of the last ``history`` contexts, so
its dim may be one that an older, no longer visible, site used (an HMM needs two dims, not one
per step). The handler records, per site, which variable each enumeration dim stands for
(``enum.site_dims``): dims are reused, variables are not.

Example::

    >>> import torch, miniprob as pyro, miniprob.distributions as dist
    >>> from miniprob import poutine
    >>> def model():
    ...     z = dist.Categorical(torch.ones(3))
    ...     return pyro.sample("z", z, infer={"enumerate": "parallel"})
    >>> with poutine.enum(first_available_dim=-1):
    ...     z = model()
    >>> z.tolist()
    [0, 1, 2]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from contextvars import ContextVar
from typing import Any

from ..runtime import Message, Messenger
from .plate import _Subsample

_MAX_DIMS = 64  # torch's limit on the number of dims of a tensor


class _EnumAllocator:
    """Where the next global enumeration dim goes, and which variable each global dim holds."""

    def __init__(self, first_available_dim: int) -> None:
        self.first_available_dim = first_available_dim
        self.next_dim = first_available_dim
        self.global_dims: dict[int, str] = {}


_ALLOCATOR: ContextVar[_EnumAllocator | None] = ContextVar("miniprob_enum_dims", default=None)


class enum(Messenger):
    """Enumerate the sites marked ``infer={"enumerate": "parallel"}`` in parallel.

    :param first_available_dim: the rightmost dim enumeration may use (negative; left of all
        plates, e.g. ``-1 - max_plate_nesting``). ``None`` continues the dims of the enclosing
        or previous ``enum`` of this thread (as Pyro's model ``enum`` continues its guide's).

    Example::

        >>> import torch, miniprob as pyro, miniprob.distributions as dist
        >>> def model():
        ...     with pyro.plate("data", 4):
        ...         return pyro.sample("z", dist.Bernoulli(0.3), infer={"enumerate": "parallel"})
        >>> enum(model, first_available_dim=-2)().shape   # the support along dim -2
        torch.Size([2, 1])
    """

    def __init__(self, fn: Callable | None = None, first_available_dim: int | None = None):
        if fn is not None and not callable(fn):
            fn, first_available_dim = None, fn
        super().__init__(fn)
        if first_available_dim is not None and not (
            isinstance(first_available_dim, int) and first_available_dim < 0
        ):
            raise ValueError(
                "enum: first_available_dim must be a negative int (e.g. -1 - max_plate_nesting), "
                f"got {first_available_dim!r}"
            )
        self.first_available_dim = first_available_dim
        self.site_dims: dict[str, dict[int, str]] = {}

    def __enter__(self) -> enum:
        if self.first_available_dim is not None:
            _ALLOCATOR.set(_EnumAllocator(self.first_available_dim))
        elif _ALLOCATOR.get() is None:
            raise ValueError(
                "enum() without first_available_dim continues an earlier enum's dims, but there "
                "is none: give first_available_dim=-1 - max_plate_nesting"
            )
        self._allocator = _ALLOCATOR.get()
        self.site_dims = {}
        self._markov_depths: dict[str, int] = {}
        self._value_dims: dict[str, dict[int, str]] = {}
        return super().__enter__()

    def process_message(self, msg: Message) -> None:
        if msg["type"] != "sample" or isinstance(msg["fn"], _Subsample):
            return
        name, infer = msg["name"], msg["infer"]
        allocator = self._allocator
        self._check_plates(msg)
        # The enumerated variables this site can see: the global ones, and those of the
        # markov contexts in its scope (a site is visible when every context hides it not).
        dims = dict(allocator.global_dims)
        scope = infer.get("_markov_scope")
        if scope is not None:
            for other, depth in scope.items():
                if self._markov_depths.get(other) == depth:
                    dims.update(self._value_dims[other])
            self._markov_depths[name] = infer["_markov_depth"]
        self.site_dims[name] = dims
        self._check_scope(msg, dims)
        if msg["done"] or msg["is_observed"] or infer.get("enumerate") != "parallel":
            return
        fn = msg["fn"]
        if not getattr(fn, "has_enumerate_support", False):
            raise ValueError(
                f"site '{name}' is marked for enumeration, but its distribution "
                f"{type(fn).__name__} has no finite support to enumerate "
                "(use a guide for it, or remove infer={'enumerate': ...})"
            )
        if scope is None:  # a global variable keeps its dim
            dim = allocator.next_dim
            allocator.next_dim -= 1
        else:  # a local one takes the first dim none of the variables it sees holds
            dim = allocator.next_dim
            while dim in dims:
                dim -= 1
        needed = -dim + len(fn.event_shape)
        if needed > _MAX_DIMS:
            raise ValueError(
                f"site '{name}': enumeration needs dim {dim}, {needed} dims in all "
                f"({-dim - (-allocator.first_available_dim - 1)} enumeration dims asked for, "
                f"after {-allocator.first_available_dim - 1} plate dims), but tensors have at "
                f"most {_MAX_DIMS} dims; wrap sequential steps in pyro.markov so that they "
                "reuse dims, or enumerate fewer sites"
            )
        value = fn.enumerate_support(expand=infer.get("expand", False))
        msg["value"] = _to_dim(name, value, dim, len(fn.batch_shape), len(fn.event_shape))
        msg["done"] = True
        if scope is None:
            allocator.global_dims[dim] = name
        dims[dim] = name
        infer["_enumerate_dim"] = dim

    def _check_plates(self, msg: Message) -> None:
        first = self._allocator.first_available_dim
        for f in msg["cond_indep_stack"]:
            if f.dim is not None and f.dim <= first:
                raise ValueError(
                    f"site '{msg['name']}' is inside plate '{f.name}' at dim {f.dim}, but "
                    f"enumeration starts at dim {first} (max_plate_nesting={-first - 1}); "
                    f"raise max_plate_nesting to at least {-f.dim}"
                )

    def _check_scope(self, msg: Message, dims: dict[int, str]) -> None:
        """A site's distribution may vary along an enumeration dim only when it sees the
        variable there (otherwise that dim may be reused, and two variables tied)."""
        batch = getattr(msg["fn"], "batch_shape", ())
        for pos in range(-len(batch), self._allocator.first_available_dim + 1):
            if batch[pos] > 1 and pos not in dims:
                raise ValueError(
                    f"site '{msg['name']}' depends on an enumerated variable at dim {pos} that "
                    "it cannot see: it lies outside the site's pyro.markov history (raise "
                    "history=, or move the site into the variable's markov context)"
                )

    def postprocess_message(self, msg: Message) -> None:
        dims = self.site_dims.get(msg["name"]) if msg["type"] == "sample" else None
        if dims is None or msg["value"] is None:
            return
        value = msg["value"]
        shape = value.shape[: value.dim() - len(msg["fn"].event_shape)]
        self._value_dims[msg["name"]] = {
            d: v for d, v in dims.items() if len(shape) >= -d and shape[d] > 1
        }


def _to_dim(name: str, value: Any, dim: int, batch_dims: int, event_dims: int) -> Any:
    """The support ``value`` (its values along dim 0, then the batch and event dims) with its
    values moved to ``dim`` (counted from the right of the batch dims)."""
    if -dim > batch_dims:  # left of the batch: pad with size-1 dims
        pad = -dim - batch_dims - 1
        return value.reshape(value.shape[:1] + (1,) * pad + value.shape[1:])
    axis = value.dim() - event_dims + dim
    if value.shape[axis] != 1:
        raise ValueError(
            f"site '{name}': enumeration dim {dim} is already used by the distribution's batch "
            f"shape {tuple(value.shape[1 : value.dim() - event_dims])} (a pyro.markov dim "
            "conflict: does the site depend on a variable outside its markov history?)"
        )
    value = value.transpose(0, axis)
    while value.dim() > -dim + event_dims and value.shape[0] == 1:
        value = value.squeeze(0)
    return value


class markov(Messenger):
    """Declare Markov dependence so that enumeration can reuse dims (Pyro's ``markov``).

    A site sees the sites of the current context and of the ``history`` contexts before it;
    use it as an iterator over a chain (``for t in pyro.markov(range(T))``), a context manager
    (re-entered for each step, as in recursive models) or a decorator.

    :param history: how many previous contexts a site depends on (0: like a plate).
    :param keep: keep the contexts of finished branches visible to their neighbours.

    Example::

        >>> import torch, miniprob as pyro, miniprob.distributions as dist
        >>> def hmm():
        ...     x = 0
        ...     for t in pyro.markov(range(10)):
        ...         x = pyro.sample(f"x_{t}", dist.Categorical(torch.eye(2)[x] * 0.8 + 0.1),
        ...                         infer={"enumerate": "parallel"})
        >>> with enum(first_available_dim=-1) as e:
        ...     hmm()
        >>> sorted({d for dims in e.site_dims.values() for d in dims})   # two dims, not ten
        [-2, -1]
    """

    def __init__(
        self,
        fn: Callable | Iterable | None = None,
        history: int = 1,
        keep: bool = False,
        dim: int | None = None,
        name: str | None = None,
    ):
        iterable = None
        if fn is not None and not callable(fn):
            if not isinstance(fn, Iterable):
                raise TypeError(
                    f"markov expects a function, an iterable or nothing, got {type(fn).__name__}"
                )
            fn, iterable = None, fn
        super().__init__(fn)
        if not (isinstance(history, int) and history >= 0):
            raise ValueError(f"markov: history must be an int >= 0, got {history!r}")
        if dim is not None or name is not None:
            raise NotImplementedError(
                "markov: vectorized markov (dim=, name=) is not implemented, as in Pyro"
            )
        self.history = history
        self.keep = keep
        self._iterable = iterable
        self._pos = -1
        self._stack: list[set[str]] = []
        self._depth = 0  # how many times this context is entered now

    def __iter__(self) -> Iterator[Any]:
        if self._iterable is None:
            raise TypeError(
                "markov: only pyro.markov(iterable) can be iterated; use `with pyro.markov():` "
                "for a context"
            )
        with ExitStack() as stack:
            for value in self._iterable:
                stack.enter_context(self)
                yield value

    def __enter__(self) -> markov:
        self._pos += 1
        if len(self._stack) <= self._pos:
            self._stack.append(set())
        self._depth += 1
        if self._depth == 1:
            super().__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.keep:
            self._stack.pop()
        self._pos -= 1
        self._depth -= 1
        if self._depth == 0:
            super().__exit__(*exc)

    def process_message(self, msg: Message) -> None:
        if msg["type"] != "sample" or msg["done"] or isinstance(msg["fn"], _Subsample):
            return
        infer = msg["infer"]
        scope = infer.setdefault("_markov_scope", Counter())
        for pos in range(max(0, self._pos - self.history), self._pos + 1):
            scope.update(self._stack[pos])
        infer["_markov_depth"] = 1 + infer.get("_markov_depth", 0)
        self._stack[self._pos].add(msg["name"])
