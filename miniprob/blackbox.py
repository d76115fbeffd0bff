"""Finite-difference gradients for functions autograd cannot see.

A function evaluated outside autograd (NumPy, SciPy, ``eval`` of a string, an external simulator)
cuts the graph. :func:`black_box` wraps it in a ``torch.autograd.Function`` whose backward pass
estimates the vector-Jacobian product ``grad_output @ J`` by evaluating the function at perturbed
inputs, so every tensor input that requires grad (and whatever produced it upstream) still trains.
"""

from __future__ import annotations

import bisect
import functools
import inspect
import itertools
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd.function import once_differentiable

__all__ = ["black_box"]

_EPS = torch.finfo(torch.float64).eps
# The power of the output's machine epsilon that balances truncation error against rounding
# error: O(h) truncation for one-sided differences (h = sqrt(eps)), O(h^2) for two-sided ones
# (h = cbrt(eps); SPSA differences each direction two-sided).
_STEP_POWER = {"forward": 1 / 2, "central": 1 / 3, "spsa": 1 / 3}
_DEFAULT_DIRECTIONS = 8
# Floating NumPy dtypes by size, for the precision of an array fn returns.
_NUMPY_FLOAT = {2: torch.float16, 4: torch.float32, 8: torch.float64}


def black_box(
    fn: Callable[..., Any] | None = None,
    *,
    method: str = "central",
    step: float | None = None,
    vectorized: bool = False,
    num_directions: int | None = None,
) -> Callable[..., torch.Tensor]:
    """Make ``fn`` differentiable by finite differences.

    ``fn`` receives detached tensors, floating ones cast to float64, and may return anything
    ``torch.as_tensor`` accepts; the wrapper returns a tensor with the dtype of the floating inputs,
    on their device. Gradients flow to every positional tensor argument that requires grad;
    keyword and non-tensor arguments pass through unchanged and are never perturbed. Each
    floating element ``x`` moves by ``h = step * max(1, |x|)``.

    :param fn: the function; ``black_box`` also works as a decorator, with or without arguments.
    :param method: ``"central"`` (``2n`` calls for ``n`` input elements, error ``O(h^2)``),
        ``"forward"`` (``n`` calls, error ``O(h)``, stays on one side of a domain boundary) or
        ``"spsa"`` (``2 * num_directions`` calls whatever ``n``, an unbiased random estimate
        along Rademacher directions that perturb all inputs at once).
    :param step: relative step; defaults to ``sqrt(eps)`` for ``"forward"`` and ``cbrt(eps)``
        otherwise, with ``eps`` the machine epsilon of what ``fn`` returns (float32's for a
        float32 tensor or array, float64's for Python numbers and float64 results), so that
        rounding in ``fn``'s output does not swamp the differences. A step so small that
        ``x + h == x`` for an input element ``x``, or below that epsilon, is a ``ValueError``
        naming the argument.
    :param vectorized: ``fn`` takes a batch: every tensor argument gets a leading batch dimension
        and ``fn`` returns one; the backward pass then makes a single call for all perturbations.
    :param num_directions: directions averaged by ``"spsa"`` (default 8).

    Example::

        >>> import numpy as np
        >>> sin = black_box(lambda x: np.sin(x.numpy()))
        >>> x = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
        >>> sin(x).sum().backward()
        >>> torch.allclose(x.grad, torch.cos(x.detach()))
        True
    """
    if method not in _STEP_POWER:
        raise ValueError(
            f"black_box: method must be 'forward', 'central' or 'spsa', got {method!r}"
        )
    if step is not None and not (isinstance(step, int | float) and 0 < step < math.inf):
        raise ValueError(f"black_box: step must be a positive finite float, got {step!r}")
    if num_directions is not None:
        if method != "spsa":
            raise ValueError(
                f"black_box: num_directions only applies to method='spsa', got method={method!r}"
            )
        if not isinstance(num_directions, int) or num_directions < 1:
            raise ValueError(
                f"black_box: num_directions must be a positive int, got {num_directions!r}"
            )
    if fn is None:
        return functools.partial(
            black_box,
            method=method,
            step=step,
            vectorized=vectorized,
            num_directions=num_directions,
        )
    if not callable(fn):
        raise TypeError(f"black_box: fn must be callable, got {type(fn).__name__}")
    spec = _Spec(
        fn=fn,
        method=method,
        step=None if step is None else float(step),
        vectorized=vectorized,
        num_directions=num_directions or _DEFAULT_DIRECTIONS,
        names=_positional_names(fn),
    )

    warned: list[bool] = []  # the float32 warning, given once per wrapped function

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> torch.Tensor:
        _check_arguments(spec, args, kwargs, warned)
        return _BlackBox.apply(spec, kwargs, *args)

    return wrapped


@dataclass(frozen=True)
class _Spec:
    fn: Callable[..., Any]
    method: str
    step: float | None  # None: chosen from the precision of fn's output
    vectorized: bool
    num_directions: int
    names: tuple[str, ...]

    def describe(self, positions: Sequence[int]) -> str:
        return " and ".join(
            f"argument {i} ({self.names[i]!r})" if i < len(self.names) else f"argument {i}"
            for i in positions
        )

    def call(self, args: Sequence[Any], kwargs: dict[str, Any], device: Any) -> torch.Tensor:
        return self.call_with_eps(args, kwargs, device)[0]

    def call_with_eps(
        self, args: Sequence[Any], kwargs: dict[str, Any], device: Any
    ) -> tuple[torch.Tensor, float]:
        """fn's output as a float64 tensor, and the machine epsilon of the output as given."""
        out = self.fn(*args, **kwargs)
        return torch.as_tensor(out, dtype=torch.float64, device=device), _eps_of(out)

    def relative_step(self, eps: float) -> float:
        return self.step if self.step is not None else eps ** _STEP_POWER[self.method]


def _eps_of(out: Any) -> float:
    """The machine epsilon of ``out``'s floating dtype (a tensor's or a NumPy array's);
    float64's for Python numbers and anything else."""
    dtype = getattr(out, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return torch.finfo(dtype).eps if dtype.is_floating_point else _EPS
    if getattr(dtype, "kind", None) == "f" and getattr(dtype, "itemsize", None) in _NUMPY_FLOAT:
        return torch.finfo(_NUMPY_FLOAT[dtype.itemsize]).eps
    return _EPS


def _positional_names(fn: Callable[..., Any]) -> tuple[str, ...]:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins and ufuncs have no signature
        return ()
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(p.name for p in itertools.takewhile(lambda p: p.kind in positional, parameters))


def _check_arguments(
    spec: _Spec, args: tuple[Any, ...], kwargs: dict[str, Any], warned: list[bool]
) -> None:
    for name, value in kwargs.items():
        if torch.is_tensor(value) and value.requires_grad:
            raise ValueError(
                f"black_box: keyword argument {name!r} requires grad, but only positional "
                "tensors are differentiated; pass it positionally"
            )
    if not torch.is_grad_enabled():
        return
    differentiated = [i for i, a in enumerate(args) if torch.is_tensor(a) and a.requires_grad]
    for i in differentiated:
        if not args[i].is_floating_point():
            raise ValueError(
                f"black_box: {spec.describe([i])} requires grad but has dtype {args[i].dtype}; "
                "only real floating tensors can be differentiated"
            )
    low = [i for i in differentiated if args[i].dtype != torch.float64]
    if low and not warned:
        warned.append(True)
        warnings.warn(
            f"black_box: {spec.describe(low)} has dtype {args[low[0]].dtype}; finite-difference "
            "gradients are computed in float64 and cast back (said once per black box)",
            UserWarning,
            stacklevel=3,
        )


def _detach64(a: Any) -> Any:
    if not torch.is_tensor(a):
        return a
    a = a.detach()
    return a.to(torch.float64) if a.is_floating_point() else a


def _output_dtype(args: Sequence[Any]) -> torch.dtype:
    dtypes = [a.dtype for a in args if torch.is_tensor(a) and a.is_floating_point()]
    return functools.reduce(torch.promote_types, dtypes) if dtypes else torch.get_default_dtype()


def _value(
    spec: _Spec, args: Sequence[Any], kwargs: dict[str, Any], device: Any
) -> tuple[torch.Tensor, float]:
    """fn at ``args`` (as a float64 tensor) and the machine epsilon of what it returned."""
    if not spec.vectorized:
        return spec.call_with_eps(args, kwargs, device)
    batch = [a.unsqueeze(0) if torch.is_tensor(a) else a for a in args]
    out, eps = spec.call_with_eps(batch, kwargs, device)
    if out.dim() == 0 or out.shape[0] != 1:
        raise ValueError(
            "black_box: with vectorized=True, fn must return a leading batch dimension; "
            f"for a batch of 1 it returned shape {tuple(out.shape)}"
        )
    return out[0], eps


def _check_step(spec: _Spec, args: Sequence[Any], wanted: list[int], step: float, eps: float):
    """Raise ``ValueError`` naming the argument if ``step`` vanishes: below the resolution of
    fn's output, or so small against an element ``x`` that ``x + h == x`` in float64."""
    if not wanted:
        return
    # h = step * max(1, |x|) exceeds half an ulp of any finite x once step > eps (float64's):
    # only smaller steps need the elementwise check.
    for i in wanted if step <= _EPS else ():
        x = _detach64(args[i]).reshape(-1)
        h = step * x.abs().clamp(min=1.0)
        vanished = ((x + h) == x) | ((x - h) == x)
        if bool(vanished.any()):
            j = int(vanished.nonzero()[0])
            raise ValueError(
                f"black_box: step {step:.3g} vanishes against {spec.describe([i])}: at element "
                f"{j}, x = {x[j].item():.6g} and x + h == x in float64; pass a larger step"
            )
    if step < eps:
        raise ValueError(
            f"black_box: step {step:.3g} is below the resolution {eps:.3g} of fn's output, so "
            f"the differences for {spec.describe(wanted)} would be rounding noise; pass a "
            "larger step (or none: the default follows the output's precision)"
        )


class _BlackBox(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, spec: _Spec, kwargs: dict[str, Any], *args: Any) -> torch.Tensor:
        device = next((a.device for a in args if torch.is_tensor(a)), None)
        # clone: fn may return a view of its inputs, and our output must not alias them
        f0, eps = _value(spec, [_detach64(a) for a in args], kwargs, device)
        f0 = f0.clone()
        ctx.step = spec.relative_step(eps)
        wanted = [
            i for i, a in enumerate(args) if torch.is_tensor(a) and ctx.needs_input_grad[2 + i]
        ]
        _check_step(spec, args, wanted, ctx.step, eps)
        ctx.spec, ctx.kwargs = spec, kwargs
        ctx.positions = [i for i, a in enumerate(args) if torch.is_tensor(a)]
        ctx.args = list(args)
        for i in ctx.positions:
            ctx.args[i] = None  # the tensors go through save_for_backward
        ctx.save_for_backward(*(args[i] for i in ctx.positions), f0)
        return f0.to(_output_dtype(args))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        *tensors, f0 = ctx.saved_tensors
        args = list(ctx.args)
        for i, tensor in zip(ctx.positions, tensors, strict=True):
            args[i] = _detach64(tensor)
        wanted = [i for i in ctx.positions if ctx.needs_input_grad[2 + i]]
        grad = grad_output.to(torch.float64).reshape(-1)
        flat = _Differences(ctx.spec, ctx.step, args, ctx.kwargs, wanted, f0, grad).vjp()
        dtypes = {i: t.dtype for i, t in zip(ctx.positions, tensors, strict=True)}
        grads: list[torch.Tensor | None] = [None] * len(args)
        for i, piece in zip(wanted, flat.split([args[i].numel() for i in wanted]), strict=True):
            grads[i] = piece.reshape(args[i].shape).to(dtypes[i])
        return (None, None, *grads)


class _Differences:
    """``grad @ J`` for the arguments at ``positions``, flattened into one vector ``x``.

    Every method evaluates ``fn`` at points ``x + sign * h * u``: ``u`` runs over the unit vectors
    (forward, central) or over Rademacher vectors (spsa), ``sign`` over ``+1`` (forward) or
    ``+1, -1``. Projecting each output on ``grad`` first keeps the looped mode at O(n) memory.
    """

    def __init__(
        self,
        spec: _Spec,
        step: float,
        args: list[Any],
        kwargs: dict[str, Any],
        positions: list[int],
        f0: torch.Tensor,
        grad: torch.Tensor,
    ) -> None:
        self.spec, self.step = spec, step
        self.args, self.kwargs, self.positions = args, kwargs, positions
        self.f0, self.grad = f0, grad
        self.sizes = [args[i].numel() for i in positions]
        self.ends = list(itertools.accumulate(self.sizes))
        self.x = torch.cat([args[i].reshape(-1) for i in positions])
        h = step * self.x.abs().clamp(min=1.0)
        self.h = (self.x + h) - self.x  # the step actually taken after rounding
        self.directions = None
        if spec.method == "spsa":
            shape = (spec.num_directions, self.x.numel())
            signs = torch.randint(0, 2, shape, device=self.x.device)
            self.directions = signs.to(torch.float64) * 2 - 1
        self.signs = (1.0,) if spec.method == "forward" else (1.0, -1.0)
        self.rows = self.x.numel() if self.directions is None else spec.num_directions

    def vjp(self) -> torch.Tensor:
        if self.x.numel() == 0:
            return self.x
        points = itertools.chain.from_iterable(self._points(sign) for sign in self.signs)
        projected = self._batched(points) if self.spec.vectorized else self._looped(points)
        projected = projected.view(len(self.signs), self.rows)
        if self.spec.method == "forward":
            differences = projected[0] - self.grad @ self.f0.reshape(-1)
        else:
            differences = (projected[0] - projected[1]) / 2
        if self.directions is None:
            return differences / self.h
        return differences @ self.directions / (self.rows * self.h)

    def _points(self, sign: float) -> Iterator[torch.Tensor]:
        if self.directions is None:
            for j in range(self.x.numel()):
                point = self.x.clone()
                point[j] += sign * self.h[j]
                yield point
        else:
            yield from self.x + sign * self.h * self.directions

    def _place(self, flat: torch.Tensor, batch: tuple[int, ...] = ()) -> list[Any]:
        placed = list(self.args)
        if batch:
            placed = [a.expand(*batch, *a.shape) if torch.is_tensor(a) else a for a in placed]
        for i, piece in zip(self.positions, flat.split(self.sizes, dim=-1), strict=True):
            placed[i] = piece.reshape((*batch, *self.args[i].shape))
        return placed

    def _looped(self, points: Iterator[torch.Tensor]) -> torch.Tensor:
        projected = []
        for k, point in enumerate(points):
            out = self.spec.call(self._place(point), self.kwargs, self.x.device)
            if out.shape != self.f0.shape:
                raise ValueError(
                    f"black_box: fn's output changed shape from {tuple(self.f0.shape)} to "
                    f"{tuple(out.shape)} when {self._culprits(k)} was perturbed; finite "
                    "differences need an output whose shape does not depend on the values"
                )
            if not torch.isfinite(out).all():
                raise self._non_finite(k)
            projected.append(self.grad @ out.reshape(-1))
        return torch.stack(projected)

    def _batched(self, points: Iterator[torch.Tensor]) -> torch.Tensor:
        batch = torch.stack(list(points))
        out = self.spec.call(self._place(batch, batch.shape[:1]), self.kwargs, self.x.device)
        expected = (len(batch), *self.f0.shape)
        if out.shape != expected:
            raise ValueError(
                f"black_box: with vectorized=True, fn must return shape {expected} for a batch "
                f"of {len(batch)} perturbations of {self.spec.describe(self.positions)}, "
                f"got {tuple(out.shape)}"
            )
        out = out.reshape(len(batch), -1)
        finite = torch.isfinite(out).all(dim=1)
        if not finite.all():
            raise self._non_finite(int((~finite).nonzero()[0]))
        return out @ self.grad

    def _culprits(self, k: int) -> str:
        if self.directions is not None:
            return self.spec.describe(self.positions)
        return self.spec.describe([self.positions[bisect.bisect_right(self.ends, k % self.rows)]])

    def _non_finite(self, k: int) -> ValueError:
        return ValueError(
            f"black_box: fn returned non-finite values when {self._culprits(k)} was perturbed "
            f"with relative step {self.step:.3g}; try a smaller `step`, or "
            "method='forward' for one-sided differences that stay on one side of a boundary"
        )
