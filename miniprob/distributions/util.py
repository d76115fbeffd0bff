"""Pyro's ``pyro.distributions.util``: the shape and arithmetic helpers user code imports
(``broadcast_shape``, ``sum_rightmost``, ``scalar_like``, ``logsumexp``, ...), and the validation
switch under Pyro's names there.

Example::

    >>> import torch
    >>> broadcast_shape((3, 1), (1, 4)), sum_rightmost(torch.ones(2, 3, 4), 2).tolist()
    ((3, 4), [12.0, 12.0])
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import logsumexp
from torch.distributions.utils import broadcast_all

from ..poutine.trace_struct import scale_and_mask as _scale_and_mask
from ..validation import enable_validation, is_validation_enabled, validation_enabled


def _is_identically(x: Any, number: int) -> bool:
    """True for a number equal to ``number`` and a scalar int64 tensor holding it (outside a
    jit trace, where its value is not fixed)."""
    if isinstance(x, numbers.Number):
        return x == number
    if isinstance(x, torch.Tensor) and x.dtype == torch.int64 and not x.shape:
        return not torch._C._get_tracing_state() and x.item() == number
    return False


def is_identically_zero(x: Any) -> bool:
    """True for the number zero and a scalar int64 tensor holding 0 (outside a jit trace);
    False for every other value (float tensors included), as in Pyro.

    Example::

        >>> is_identically_zero(0), is_identically_zero(torch.tensor(0.0))
        (True, False)
    """
    return _is_identically(x, 0)


def is_identically_one(x: Any) -> bool:
    """True for the number one and a scalar int64 tensor holding 1 (outside a jit trace).

    Example::

        >>> is_identically_one(1.0), is_identically_one(torch.ones(()))
        (True, False)
    """
    return _is_identically(x, 1)


def broadcast_shape(*shapes: tuple[int, ...], strict: bool = False) -> tuple[int, ...]:
    """The shape ``shapes`` broadcast to (NumPy's rules); ``strict=True`` only prepends dims,
    never stretches a size of 1. ``ValueError`` when they do not broadcast.

    Example::

        >>> broadcast_shape((2, 1), (5,)), broadcast_shape((5,), (2, 5), strict=True)
        ((2, 5), (2, 5))
    """
    result: list[int] = []  # right to left
    for shape in shapes:
        for i, size in enumerate(reversed(shape)):
            if i == len(result):
                result.append(size)
            elif result[i] == 1 and not strict:
                result[i] = size
            elif result[i] != size and (size != 1 or strict):
                raise ValueError(
                    "shape mismatch: objects cannot be broadcast to a single shape: "
                    + " vs ".join(map(str, shapes))
                )
    return tuple(reversed(result))


def gather(value: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
    """``value.gather(dim, index)`` after broadcasting the two, ``index`` taken at position 0
    of ``dim`` (Pyro's broadcasted gather).

    Example::

        >>> gather(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[2], [0]]), -1).tolist()
        [[3.0], [1.0]]
    """
    value, index = broadcast_all(value, index)
    first = torch.zeros(1, dtype=torch.long, device=index.device)
    return value.gather(dim, index.index_select(dim, first))


def _sum_dims(value: Any, dim: int | float, rightmost: bool) -> Any:
    if isinstance(value, numbers.Number):
        return value
    if dim < 0:
        dim += value.dim()
    if dim == 0:
        return value
    if dim >= value.dim():
        return value.sum()
    if rightmost:
        return value.reshape(value.shape[:-dim] + (-1,)).sum(-1)
    return value.reshape(-1, *value.shape[dim:]).sum(0)


def sum_rightmost(value: Any, dim: int | float) -> Any:
    """Sum out the ``dim`` right-most dims (a negative ``dim``: all but the ``-dim`` left-most;
    ``float("inf")``: all). A number is returned as it is.

    Example::

        >>> sum_rightmost(torch.ones(2, 3, 4), -1).shape
        torch.Size([2])
    """
    return _sum_dims(value, dim, rightmost=True)


def sum_leftmost(value: Any, dim: int | float) -> Any:
    """Sum out the ``dim`` left-most dims (negative: all but the ``-dim`` right-most).

    Example::

        >>> sum_leftmost(torch.ones(2, 3, 4), 1).shape
        torch.Size([3, 4])
    """
    return _sum_dims(value, dim, rightmost=False)


def scale_and_mask(tensor: Any, scale: Any = 1.0, mask: Any = None) -> Any:
    """``tensor * scale``, zero where ``mask`` is False; ``mask`` may also be a bool, and a
    ``tensor`` of the number zero stays zero, as in Pyro.

    Example::

        >>> scale_and_mask(torch.ones(2), 2.0, torch.tensor([True, False])).tolist()
        [2.0, 0.0]
    """
    if is_identically_zero(tensor):
        return tensor
    return _scale_and_mask(tensor, scale, mask)


def scalar_like(prototype: torch.Tensor, fill_value: Any) -> torch.Tensor:
    """A scalar tensor of ``fill_value`` with the dtype and device of ``prototype``.

    Example::

        >>> scalar_like(torch.zeros(3, dtype=torch.float64), 1)
        tensor(1., dtype=torch.float64)
    """
    return torch.tensor(fill_value, dtype=prototype.dtype, device=prototype.device)


def eye_like(value: torch.Tensor, m: int, n: int | None = None) -> torch.Tensor:
    """An ``m x n`` identity matrix with the dtype and device of ``value``.

    Example::

        >>> eye_like(torch.zeros((), dtype=torch.float64), 2, 3).tolist()
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    """
    return torch.eye(m, m if n is None else n, dtype=value.dtype, device=value.device)


__all__ = [
    "broadcast_shape",
    "enable_validation",
    "eye_like",
    "gather",
    "is_identically_one",
    "is_identically_zero",
    "is_validation_enabled",
    "logsumexp",
    "scalar_like",
    "scale_and_mask",
    "sum_leftmost",
    "sum_rightmost",
    "validation_enabled",
]
