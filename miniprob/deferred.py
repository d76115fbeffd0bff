"""Distributions with live, transformed parameters: define once, rebuild at every use.

Plain PyTorch invites a bug: ``std = torch.exp(log_std)`` and ``Normal(mean, std)`` written once,
outside the training loop. The second ``backward()`` fails ("Trying to backward through the graph
a second time"), and ``retain_graph=True`` hides it: ``std`` is never recomputed, so the scale
the loop trains with stays the one computed at the start.

:class:`Constrained` holds a trainable value as an unconstrained leaf; :func:`deferred` describes
a distribution by its class and arguments and builds it afresh, from the current values, at every
use (``rsample``, ``log_prob``, ``.scale``, a ``sample`` site, ...), so each step gets a fresh
graph. Switching ``Normal`` to ``Gamma`` is a one-line change.

Example::

    >>> import torch
    >>> from miniprob.distributions import Normal, constraints
    >>> mean = torch.nn.Parameter(torch.tensor(0.0))
    >>> q = deferred(Normal, mean, Constrained(1.0, constraints.positive))
    >>> opt = torch.optim.SGD(q.parameters(), lr=0.1)
    >>> for _ in range(2):                      # a second backward() works: the graph is new
    ...     opt.zero_grad()
    ...     (-q.log_prob(torch.tensor(2.0))).backward()
    ...     opt.step()
    >>> round(mean.item(), 3), round(q.scale.item(), 3)
    (0.299, 1.459)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch.distributions import Distribution, constraints
from torch.distributions.transforms import Transform

from .distributions.shape import Independent, MaskedDistribution, ShapeHelpers
from .unconstrain import constraint_transform, unconstrain
from .validation import is_validation_enabled

__all__ = ["Constrained", "DeferredDistribution", "deferred"]


class Constrained:
    """A trainable value satisfying ``constraint``, stored as an unconstrained leaf.

    ``c()`` computes the constrained value afresh from the leaf ``c.unconstrained`` (an
    ``nn.Parameter``, ``transform_to(constraint).inv(init)``), which optimizers update.

    :param init: the initial constrained value (finite, with a finite unconstrained value).
    :param constraint: a ``torch.distributions.constraints`` object with a registered transform.

    Example::

        >>> import torch
        >>> from miniprob.distributions import constraints
        >>> c = Constrained(torch.tensor([1.0, 2.0]), constraints.positive)
        >>> c.unconstrained.exp().tolist() == c().tolist() == [1.0, 2.0]
        True
    """

    def __init__(
        self, init: torch.Tensor | float, constraint: constraints.Constraint = constraints.real
    ) -> None:
        if not isinstance(constraint, constraints.Constraint):
            raise TypeError(
                f"Constrained: 'constraint' should be a torch.distributions constraint, "
                f"got {constraint!r}"
            )
        self.transform = constraint_transform("Constrained", constraint)
        leaf = unconstrain("Constrained", init, constraint, self.transform).clone()
        self.constraint = constraint
        self.unconstrained = torch.nn.Parameter(leaf)

    def __call__(self) -> torch.Tensor:
        """The constrained value, computed now from the unconstrained leaf."""
        return self.transform(self.unconstrained)

    def __repr__(self) -> str:
        with torch.no_grad():
            value = self()
        shown = f"{value.item():.4g}" if value.dim() == 0 else f"shape={tuple(value.shape)}"
        return f"Constrained({shown}, {self.constraint})"


class DeferredDistribution:
    """A distribution rebuilt from its live arguments at every use; made by :func:`deferred`.

    It is not a ``torch.distributions.Distribution`` (so that it cannot be mistaken for a fixed
    one); ``sample`` sites resolve it to a concrete distribution, which is what traces record.
    Methods and properties (``rsample``, ``log_prob``, ``mean``, ``batch_shape``, and by
    delegation the parameters such as ``.loc``) act on a fresh build each time.

    ``to_event``, ``expand``, ``expand_by`` and ``mask`` return deferred distributions too.
    """

    def __init__(self, factory: Callable[..., Distribution], args: tuple, kwargs: dict) -> None:
        self._factory = factory
        self._args = list(args)
        self._kwargs = dict(kwargs)
        self._live_args = [(i, f) for i, f in enumerate(map(_live, args)) if f is not None]
        self._live_kwargs = [(k, f) for k, f in ((k, _live(v)) for k, v in kwargs.items()) if f]
        self._build_kwargs = dict(kwargs)
        self._set_validate_args = (
            isinstance(factory, type)
            and _accepts_validate_args(factory)
            and "validate_args" not in kwargs
        )
        if self._set_validate_args:
            self._build_kwargs["validate_args"] = False
        self._checked = False
        self._shared: Distribution | None = None

    # ---- building ----------------------------------------------------------------------
    def resolve(self) -> Distribution:
        """A concrete distribution built now from the current argument values (or the one
        :meth:`shared` holds)."""
        if self._shared is not None:
            return self._shared
        if self._checked:
            return self._build(self._build_kwargs)
        return self._first_build()

    _miniprob_resolve = resolve

    def _build(self, kwargs: dict) -> Distribution:
        args = self._args
        if self._live_args:
            args = list(args)
            for i, value in self._live_args:
                args[i] = value()
        if self._live_kwargs:
            kwargs = dict(kwargs)
            for k, value in self._live_kwargs:
                kwargs[k] = value()
        return self._factory(*args, **kwargs)

    def _first_build(self) -> Distribution:
        # The checks run once, here; later builds skip torch's argument validation.
        names = self._arg_names()
        for i, value in self._live_args:
            _check_no_arguments(names[i], value)
        for k, value in self._live_kwargs:
            _check_no_arguments(k, value)
        kwargs = self._build_kwargs
        if self._set_validate_args:
            kwargs = {**kwargs, "validate_args": is_validation_enabled()}
        d = self._build(kwargs)
        if not isinstance(d, Distribution):
            raise TypeError(
                f"deferred: {_name(self._factory)} returned {type(d).__name__}, "
                "expected a torch.distributions.Distribution"
            )
        self._checked = True
        return d

    @contextmanager
    def shared(self) -> Iterator[Distribution]:
        """Inside the block, every use reuses one concrete distribution, built on entry.

        Each use otherwise rebuilds the distribution and recomputes its transformed arguments
        (a build costs within 20% of writing ``Normal(loc, log_scale.exp())`` by hand). Measured
        on CPU for a Normal with a ``Constrained`` positive scale, scalar or of 1000 elements,
        per training step (forward, backward, SGD step): with four ``rsample``/``log_prob``
        pairs per step, 1.2x faster shared; with one pair, no measurable gain. Values read inside
        the block are those of its entry: leave the block before an optimizer step.

        Example::

            >>> import torch
            >>> from miniprob.distributions import Normal
            >>> q = deferred(Normal, torch.nn.Parameter(torch.zeros(())), 1.0)
            >>> with q.shared() as d:
            ...     q.resolve() is d
            True
        """
        outer = self._shared
        self._shared = self.resolve() if outer is None else outer
        try:
            yield self._shared
        finally:
            self._shared = outer

    # ---- trainable leaves --------------------------------------------------------------
    def named_parameters(self) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, leaf)`` for each trainable leaf the distribution depends on.

        A leaf argument is named after its argument (``"loc"``), a :class:`Constrained` one
        ``"scale.unconstrained"``; leaves reached through callables or a zero-argument factory
        are found in the autograd graph and numbered (``"scale.0"``, ``"0"``). The names let
        ``miniprob.module("q", q)`` register the leaves in the param store, for SVI.
        """
        seen: set[int] = set()
        for name, leaf in self._named_leaves():
            if id(leaf) not in seen:
                seen.add(id(leaf))
                yield name, leaf

    def parameters(self) -> Iterator[torch.Tensor]:
        """The trainable leaves, ready for ``torch.optim``."""
        return (leaf for _, leaf in self.named_parameters())

    def _named_leaves(self) -> Iterator[tuple[str, torch.Tensor]]:
        if not self._args and not self._kwargs:
            leaves = _graph_leaves(_state_tensors(self.resolve(), set()))
            yield from ((str(k), leaf) for k, leaf in enumerate(leaves))
            return
        for name, value in self._named_args():
            if isinstance(value, Constrained):
                yield f"{name}.unconstrained", value.unconstrained
            elif isinstance(value, DeferredDistribution):
                yield from ((f"{name}.{n}", leaf) for n, leaf in value.named_parameters())
            elif isinstance(value, torch.Tensor) and value.is_leaf:
                if value.requires_grad:
                    yield name, value
            else:
                live = _live(value)
                leaves = _graph_leaves(_state_tensors(live() if live else value, set()))
                yield from ((f"{name}.{k}", leaf) for k, leaf in enumerate(leaves))

    def _named_args(self) -> list[tuple[str, Any]]:
        return [*zip(self._arg_names(), self._args, strict=True), *self._kwargs.items()]

    def _arg_names(self) -> list[str]:
        try:
            params = inspect.signature(self._factory).parameters.values()
        except (TypeError, ValueError):
            params = []
        positional = [
            p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        return [positional[i] if i < len(positional) else f"arg{i}" for i in range(len(self._args))]

    # ---- the distribution interface, on a fresh build ----------------------------------
    def sample(self, sample_shape: Sequence[int] = ()) -> torch.Tensor:
        return self.resolve().sample(sample_shape)

    def rsample(self, sample_shape: Sequence[int] = ()) -> torch.Tensor:
        return self.resolve().rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.resolve().log_prob(value)

    def entropy(self) -> torch.Tensor:
        return self.resolve().entropy()

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        return self.resolve().cdf(value)

    def icdf(self, value: torch.Tensor) -> torch.Tensor:
        return self.resolve().icdf(value)

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        return self.resolve().enumerate_support(expand)

    @property
    def mean(self) -> torch.Tensor:
        return self.resolve().mean

    @property
    def mode(self) -> torch.Tensor:
        return self.resolve().mode

    @property
    def stddev(self) -> torch.Tensor:
        return self.resolve().stddev

    @property
    def variance(self) -> torch.Tensor:
        return self.resolve().variance

    @property
    def batch_shape(self) -> torch.Size:
        return self.resolve().batch_shape

    @property
    def event_shape(self) -> torch.Size:
        return self.resolve().event_shape

    @property
    def support(self) -> constraints.Constraint:
        return self.resolve().support

    @property
    def has_rsample(self) -> bool:
        return self.resolve().has_rsample

    @property
    def has_enumerate_support(self) -> bool:
        return self.resolve().has_enumerate_support

    def __getattr__(self, name: str) -> Any:
        # Anything else (``.loc``, ``.scale``, ``.probs``, ...) is read from a fresh build.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.resolve(), name)

    def to_event(self, reinterpreted_batch_ndims: int | None = None) -> DeferredDistribution:
        """Deferred ``to_event``: the rightmost batch dims become event dims."""
        return deferred(_to_event, self, reinterpreted_batch_ndims)

    def expand(self, batch_shape: Sequence[int]) -> DeferredDistribution:
        """Deferred ``expand`` to ``batch_shape``."""
        return deferred(_expand, self, torch.Size(batch_shape))

    def expand_by(self, sample_shape: Sequence[int]) -> DeferredDistribution:
        """Deferred ``expand_by``: the batch shape grows on the left by ``sample_shape``."""
        return deferred(_expand_by, self, torch.Size(sample_shape))

    def mask(self, mask: bool | torch.Tensor) -> DeferredDistribution:
        """Deferred ``mask``: log densities are zero where ``mask`` is False."""
        return deferred(_mask, self, mask)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={_short(v)}" for k, v in self._named_args())
        return f"deferred({_name(self._factory)}{', ' if shown else ''}{shown})"


def deferred(
    factory: Callable[..., Distribution], *args: Any, **kwargs: Any
) -> DeferredDistribution:
    """A distribution built as ``factory(*args, **kwargs)`` afresh, from current values, at
    every use.

    Each argument may be a constant (a number, a tensor), a trainable leaf (an
    ``nn.Parameter``), a :class:`Constrained` value, another deferred distribution, or a
    zero-argument callable such as ``lambda: torch.exp(log_std)``; all but constants are
    evaluated at each build. ``deferred(thunk)`` with a zero-argument function returning a
    distribution works too. A tensor computed from trainable leaves is a constant: its graph is
    built once, the stale-graph bug this avoids; pass a callable instead.

    The arguments are validated at the first build only; later builds pass
    ``validate_args=False`` where ``factory`` accepts it.

    :param factory: a distribution class, or any callable returning a distribution.

    Example::

        >>> import torch
        >>> from miniprob.distributions import Gamma, Normal, constraints
        >>> a, b = Constrained(2.0, constraints.positive), Constrained(1.0, constraints.positive)
        >>> q = deferred(Gamma, a, b)        # was: deferred(Normal, a, b)
        >>> q.mean.item(), [p.shape for p in q.parameters()]
        (2.0, [torch.Size([]), torch.Size([])])
        >>> log_std = torch.nn.Parameter(torch.zeros(()))
        >>> deferred(Normal, 0.0, lambda: torch.exp(log_std)).stddev.item()
        1.0
    """
    if not callable(factory):
        raise TypeError(
            f"deferred: 'factory' should be a distribution class or a callable, got {factory!r}"
        )
    return DeferredDistribution(factory, args, kwargs)


# ---- helpers -------------------------------------------------------------------------------
def _live(value: Any) -> Callable[[], Any] | None:
    """How to compute a live argument now, or None for a constant."""
    if isinstance(value, DeferredDistribution):
        return value.resolve
    if isinstance(value, (torch.Tensor, Distribution, Transform, type)):
        return None
    return value if callable(value) else None


def _check_no_arguments(name: str, fn: Callable) -> None:
    try:
        inspect.signature(fn).bind()
    except TypeError:
        raise TypeError(
            f"deferred: argument '{name}' is a callable that needs arguments; "
            "a live argument must be callable with none"
        ) from None
    except ValueError:
        return  # no signature to inspect (a builtin): trust it


@functools.cache
def _accepts_validate_args(factory: Callable) -> bool:
    try:
        return "validate_args" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def _state_tensors(obj: Any, seen: set[int]) -> list[torch.Tensor]:
    """The tensors held by ``obj``: itself, or the state of a distribution or transform."""
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (Distribution, Transform)):
        obj = list(vars(obj).values())
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _state_tensors(item, seen)]
    return []


def _graph_leaves(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The leaves requiring grad that ``tensors`` were computed from, in first-seen order."""
    leaves: list[torch.Tensor] = []
    seen: set = set()
    stack = [t.grad_fn if t.grad_fn is not None else t for t in reversed(tensors)]
    while stack:
        node = stack.pop()
        if isinstance(node, torch.Tensor):
            if node.requires_grad:
                leaves.append(node)
            continue
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None:
            leaves.append(variable)
        stack.extend(fn for fn, _ in reversed(node.next_functions))
    return leaves


def _to_event(d: Distribution, n: int | None) -> Distribution:
    if isinstance(d, ShapeHelpers):
        return d.to_event(n)
    n = len(d.batch_shape) if n is None else n
    return Independent(d, n) if n else d


def _expand(d: Distribution, batch_shape: torch.Size) -> Distribution:
    return d.expand(batch_shape)


def _expand_by(d: Distribution, sample_shape: torch.Size) -> Distribution:
    return d.expand(sample_shape + d.batch_shape)


def _mask(d: Distribution, mask: bool | torch.Tensor) -> Distribution:
    return d.mask(mask) if isinstance(d, ShapeHelpers) else MaskedDistribution(d, mask)


def _name(factory: Callable) -> str:
    return getattr(factory, "__name__", type(factory).__name__).lstrip("_")


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        kind = "Parameter" if isinstance(value, torch.nn.Parameter) else "tensor"
        if value.dim() == 0:
            return f"{kind}({value.item():.4g})"
        return f"{kind}(shape={tuple(value.shape)})"
    if isinstance(value, (Constrained, DeferredDistribution)) or not callable(value):
        return repr(value)
    return _name(value)
